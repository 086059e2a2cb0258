// Which builds of a CPU model library this page's WebAssembly can run: the relaxed-SIMD build (8-bit dot products,
// i32x4.relaxed_dot_i8x16_i7x16_add_s) where the engine accepts that instruction, the SIMD128 build everywhere with
// SIMD; detected by validating two tiny modules, each one function using the instruction in question. Which of them
// the page runs is PREFERRED_CPU_BUILD's choice (measured).

export type CpuBuild = "relaxed-simd" | "simd128";

// (v128, v128, v128) -> v128: i32x4.relaxed_dot_i8x16_i7x16_add_s (0xfd 0x113)
const RELAXED_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 8, 1, 0x60, 3, 0x7b, 0x7b, 0x7b, 1, 0x7b, 3, 2, 1, 0,
  10, 13, 1, 11, 0, 0x20, 0, 0x20, 1, 0x20, 2, 0xfd, 0x93, 0x02, 0x0b,
]);
// (v128, v128) -> v128: i32x4.dot_i16x8_s (0xfd 0xba), part of SIMD128
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 0x60, 2, 0x7b, 0x7b, 1, 0x7b, 3, 2, 1, 0,
  10, 11, 1, 9, 0, 0x20, 0, 0x20, 1, 0xfd, 0xba, 0x01, 0x0b,
]);

function validates(bytes: Uint8Array<ArrayBuffer>): boolean {
  try {
    return WebAssembly.validate(bytes);
  } catch {
    return false;
  }
}

/**
 * The build the page runs where both validate. Measured with bench/cpu.py (tokens per CPU-second, same weights,
 * Chromium 156 on x86-64): the SIMD128 build prefills ~1.5x and decodes ~1.2x faster than the relaxed-SIMD one.
 * V8 lowers i32x4.relaxed_dot_i8x16_i7x16_add_s to three instructions on x86 without AVX-VNNI, and the relaxed
 * build's 4-bit products need two of them per 16 weights (value and residue bytes), where SIMD128's
 * i32x4.dot_i16x8_s is one instruction per 8. With AVX-VNNI (one vpdpbusd) the relaxed build runs at the SIMD128
 * build's speed, not faster, as does a variant adding i16x8.relaxed_dot_i8x16_i7x16_s results (one pmaddubsw)
 * without it (bench/cpu_variants.py); only single-byte activations, which change the built-in model's greedy
 * answers, beat SIMD128 with relaxed SIMD.
 */
export const PREFERRED_CPU_BUILD: CpuBuild = "simd128";

/** The most capable build this page's WebAssembly validates, or null when it has no SIMD at all. */
export function detectCpuBuild(): CpuBuild | null {
  if (!validates(SIMD_PROBE)) return null;
  return validates(RELAXED_PROBE) ? "relaxed-simd" : "simd128";
}

/** How the UI names a build. */
export function cpuBuildLabel(build: CpuBuild | null | undefined): string {
  return build === "relaxed-simd" ? "WebAssembly relaxed SIMD, 8-bit dot products" : "WebAssembly SIMD128";
}
