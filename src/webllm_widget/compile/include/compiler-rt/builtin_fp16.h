// webllm-widget's own stand-in for the compiler-rt half-precision header that TVM's runtime
// includes (absent from the apache-tvm wheel). It converts between IEEE-754 binary formats of
// any width, described by their storage type and the number of explicit significand bits:
//   __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>(h)   half  -> float
//   __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>(f)    float -> half
// Both handle zeros, subnormals, infinities and NaN; truncation rounds to nearest, ties to even.
#ifndef WEBLLM_WIDGET_BUILTIN_FP16_H_
#define WEBLLM_WIDGET_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace webllm_widget_fp {

template <typename Rep, int SigBits>
struct Layout {
  static constexpr int kBits = int(sizeof(Rep) * 8);
  static constexpr int kExpBits = kBits - SigBits - 1;
  static constexpr int kBias = (1 << (kExpBits - 1)) - 1;
  static constexpr int kExpMax = (1 << kExpBits) - 1;
  static constexpr Rep kSigMask = (Rep(1) << SigBits) - 1;
  static Rep Sign(Rep r) { return Rep(r >> (kBits - 1)); }
  static int Exp(Rep r) { return int((r >> SigBits) & Rep(kExpMax)); }
  static Rep Sig(Rep r) { return Rep(r & kSigMask); }
  static Rep Make(Rep sign, Rep exp, Rep sig) {
    return Rep((sign << (kBits - 1)) | (exp << SigBits) | sig);
  }
};

template <typename To, typename From>
inline To BitCast(const From& v) {
  static_assert(sizeof(To) == sizeof(From), "bit casts keep the size");
  To out;
  std::memcpy(&out, &v, sizeof(To));
  return out;
}

}  // namespace webllm_widget_fp

// Widening conversion: exact for every input.
template <typename SrcT, typename SrcRep, int SrcSigBits, typename DstT, typename DstRep, int DstSigBits>
inline DstT __extendXfYf2__(SrcT a) {
  using S = webllm_widget_fp::Layout<SrcRep, SrcSigBits>;
  using D = webllm_widget_fp::Layout<DstRep, DstSigBits>;
  static_assert(DstSigBits >= SrcSigBits && D::kExpBits >= S::kExpBits, "extend widens");
  SrcRep r = webllm_widget_fp::BitCast<SrcRep>(a);
  DstRep sign = DstRep(S::Sign(r));
  int exp = S::Exp(r);
  DstRep sig = DstRep(S::Sig(r)) << (DstSigBits - SrcSigBits);
  DstRep out;
  if (exp == S::kExpMax) {  // infinity or NaN (NaN payload kept, so NaN stays NaN)
    out = D::Make(sign, DstRep(D::kExpMax), sig);
  } else if (exp != 0) {  // normal
    out = D::Make(sign, DstRep(exp - S::kBias + D::kBias), sig);
  } else if (sig == 0) {  // zero
    out = D::Make(sign, 0, 0);
  } else {  // subnormal in the source: normalize it, the wider format has the range
    int e = 1 - S::kBias;
    while ((sig & (DstRep(1) << DstSigBits)) == 0) {
      sig <<= 1;
      --e;
    }
    out = D::Make(sign, DstRep(e + D::kBias), DstRep(sig & D::kSigMask));
  }
  return webllm_widget_fp::BitCast<DstT>(out);
}

// Narrowing conversion: rounds to nearest even; overflows to infinity, underflows to subnormals/zero.
template <typename SrcT, typename SrcRep, int SrcSigBits, typename DstT, typename DstRep, int DstSigBits>
inline DstT __truncXfYf2__(SrcT a) {
  using S = webllm_widget_fp::Layout<SrcRep, SrcSigBits>;
  using D = webllm_widget_fp::Layout<DstRep, DstSigBits>;
  static_assert(SrcSigBits > DstSigBits && S::kExpBits >= D::kExpBits, "trunc narrows");
  constexpr int kDrop = SrcSigBits - DstSigBits;
  SrcRep r = webllm_widget_fp::BitCast<SrcRep>(a);
  DstRep sign = DstRep(S::Sign(r));
  int exp = S::Exp(r);
  SrcRep sig = S::Sig(r);
  if (exp == S::kExpMax) {  // infinity or NaN; keep NaN quiet and non-zero
    DstRep nan_sig = sig ? DstRep((sig >> kDrop) | (DstRep(1) << (DstSigBits - 1))) : DstRep(0);
    return webllm_widget_fp::BitCast<DstT>(D::Make(sign, DstRep(D::kExpMax), nan_sig));
  }
  if (exp == 0 && sig == 0) return webllm_widget_fp::BitCast<DstT>(D::Make(sign, 0, 0));
  // Work with the full significand (implicit bit made explicit) and the unbiased exponent.
  int e = exp == 0 ? 1 - S::kBias : exp - S::kBias;
  SrcRep full = exp == 0 ? sig : SrcRep(sig | (SrcRep(1) << SrcSigBits));
  int dst_exp = e + D::kBias;
  int shift = kDrop;
  if (dst_exp <= 0) {  // lands in the destination's subnormal range: shift further right
    shift += 1 - dst_exp;
    dst_exp = 0;
  }
  if (shift >= int(sizeof(SrcRep) * 8)) return webllm_widget_fp::BitCast<DstT>(D::Make(sign, 0, 0));
  SrcRep kept = full >> shift;
  SrcRep rest = full & ((SrcRep(1) << shift) - 1);
  SrcRep half = SrcRep(1) << (shift - 1);
  if (rest > half || (rest == half && (kept & 1))) ++kept;  // round to nearest, ties to even
  // `kept` holds the implicit bit for normals; rounding may carry into the next binade.
  DstRep bits;
  if (dst_exp == 0) {
    // Subnormal result; a carry into bit DstSigBits makes it the smallest normal, which the
    // plain sum below encodes correctly.
    bits = DstRep(kept);
  } else {
    if (kept >> (DstSigBits + 1)) {
      kept >>= 1;
      ++dst_exp;
    }
    if (dst_exp >= D::kExpMax) return webllm_widget_fp::BitCast<DstT>(D::Make(sign, DstRep(D::kExpMax), 0));
    bits = DstRep((DstRep(dst_exp) << DstSigBits) | DstRep(kept & ((SrcRep(1) << DstSigBits) - 1)));
  }
  return webllm_widget_fp::BitCast<DstT>(DstRep(bits | (sign << (D::kBits - 1))));
}

#endif  // WEBLLM_WIDGET_BUILTIN_FP16_H_
