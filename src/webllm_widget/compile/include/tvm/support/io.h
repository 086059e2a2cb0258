// webllm-widget's own stand-in for <tvm/support/io.h>, which the apache-tvm wheel does not ship.
// It declares the byte-stream interface the TVM runtime sources serialize through. Only what
// the web runtime (tvm/web/emcc/*.cc) uses is here.
#ifndef WEBLLM_WIDGET_TVM_SUPPORT_IO_H_
#define WEBLLM_WIDGET_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace tvm {
namespace support {

// Serializer<T> knows how to write and read one value of T; serializer.h specializes it.
// The second parameter lets specializations select families of types with enable_if.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

// A sequential byte source and/or sink. Subclasses implement the two raw calls; the typed
// helpers below go through Serializer<T> so that every type has one wire format.
class Stream {
 public:
  virtual ~Stream() = default;
  // Reads up to `size` bytes into `ptr`; returns how many were read (0 at the end).
  virtual size_t Read(void* ptr, size_t size) = 0;
  // Writes `size` bytes from `ptr`; returns how many were written.
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    Serializer<T>::Write(this, value);
  }
  template <typename T>
  bool Read(T* out) {
    return Serializer<T>::Read(this, out);
  }
  template <typename T>
  void WriteArray(const T* items, size_t count) {
    if constexpr (std::is_arithmetic_v<T>) {
      if (count != 0) Write(static_cast<const void*>(items), sizeof(T) * count);
    } else {
      for (size_t i = 0; i < count; ++i) Serializer<T>::Write(this, items[i]);
    }
  }
  template <typename T>
  bool ReadArray(T* items, size_t count) {
    if constexpr (std::is_arithmetic_v<T>) {
      size_t want = sizeof(T) * count;
      return count == 0 || Read(static_cast<void*>(items), want) == want;
    } else {
      for (size_t i = 0; i < count; ++i) {
        if (!Serializer<T>::Read(this, items + i)) return false;
      }
      return true;
    }
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_TVM_SUPPORT_IO_H_
