// webllm-widget's own stand-in for <tvm/support/serializer.h> (absent from the apache-tvm wheel).
//
// The wire format has to match what libtvm writes when it saves a VM executable, because the
// wasm runtime reads those bytes back: every number is stored little-endian at its own width,
// and every string or container is a uint64 element count followed by its elements.
// DLDataType is code (u8), bits (u8), lanes (u16); DLDevice is device_type (i32), device_id (i32).
// WebAssembly is little-endian, so numbers are copied as they are.
#ifndef WEBLLM_WIDGET_TVM_SUPPORT_SERIALIZER_H_
#define WEBLLM_WIDGET_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "webllm-widget's serializer assumes a little-endian target (wasm32 is)"
#endif

namespace tvm {
namespace support {

namespace detail {
inline void WriteCount(Stream* strm, uint64_t count) { strm->Write(&count, sizeof(count)); }
inline bool ReadCount(Stream* strm, uint64_t* count) {
  return strm->Read(count, sizeof(*count)) == sizeof(*count);
}
}  // namespace detail

// Numbers: their bytes as they are in memory.
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const T& v) { strm->Write(&v, sizeof(T)); }
  static bool Read(Stream* strm, T* v) { return strm->Read(v, sizeof(T)) == sizeof(T); }
};

// Enums: as their underlying integer.
template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Int = std::underlying_type_t<T>;
  static void Write(Stream* strm, const T& v) { Serializer<Int>::Write(strm, static_cast<Int>(v)); }
  static bool Read(Stream* strm, T* v) {
    Int raw{};
    if (!Serializer<Int>::Read(strm, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::string& s) {
    detail::WriteCount(strm, s.size());
    if (!s.empty()) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, std::string* s) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    s->assign(static_cast<size_t>(n), '\0');
    return n == 0 || strm->Read(&(*s)[0], s->size()) == s->size();
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::String& s) {
    detail::WriteCount(strm, s.size());
    if (s.size() != 0) strm->Write(s.data(), s.size());
  }
  static bool Read(Stream* strm, ffi::String* s) {
    std::string tmp;
    if (!Serializer<std::string>::Read(strm, &tmp)) return false;
    *s = ffi::String(std::move(tmp));
    return true;
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::vector<T>& v) {
    detail::WriteCount(strm, v.size());
    strm->WriteArray(v.data(), v.size());
  }
  static bool Read(Stream* strm, std::vector<T>* v) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    v->resize(static_cast<size_t>(n));
    return strm->ReadArray(v->data(), v->size());
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::pair<A, B>& p) {
    Serializer<A>::Write(strm, p.first);
    Serializer<B>::Write(strm, p.second);
  }
  static bool Read(Stream* strm, std::pair<A, B>* p) {
    return Serializer<A>::Read(strm, &p->first) && Serializer<B>::Read(strm, &p->second);
  }
};

// Maps: a count, then key, value, key, value, ...
template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const std::unordered_map<K, V>& m) {
    detail::WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, std::unordered_map<K, V>* m) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    m->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(strm, &k) || !Serializer<V>::Read(strm, &v)) return false;
      m->emplace(std::move(k), std::move(v));
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Array<T>& a) {
    detail::WriteCount(strm, a.size());
    for (const T& item : a) Serializer<T>::Write(strm, item);
  }
  static bool Read(Stream* strm, ffi::Array<T>* a) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Array<T> out;
    for (uint64_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(strm, &item)) return false;
      out.push_back(std::move(item));
    }
    *a = std::move(out);
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const ffi::Map<K, V>& m) {
    detail::WriteCount(strm, m.size());
    for (const auto& kv : m) {
      Serializer<K>::Write(strm, kv.first);
      Serializer<V>::Write(strm, kv.second);
    }
  }
  static bool Read(Stream* strm, ffi::Map<K, V>* m) {
    uint64_t n = 0;
    if (!detail::ReadCount(strm, &n)) return false;
    ffi::Map<K, V> out;
    for (uint64_t i = 0; i < n; ++i) {
      K k;
      V v;
      if (!Serializer<K>::Read(strm, &k) || !Serializer<V>::Read(strm, &v)) return false;
      out.Set(std::move(k), std::move(v));
    }
    *m = std::move(out);
    return true;
  }
};

template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDataType& t) {
    Serializer<uint8_t>::Write(strm, t.code);
    Serializer<uint8_t>::Write(strm, t.bits);
    Serializer<uint16_t>::Write(strm, t.lanes);
  }
  static bool Read(Stream* strm, DLDataType* t) {
    return Serializer<uint8_t>::Read(strm, &t->code) && Serializer<uint8_t>::Read(strm, &t->bits) &&
           Serializer<uint16_t>::Read(strm, &t->lanes);
  }
};

template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* strm, const DLDevice& d) {
    Serializer<int32_t>::Write(strm, static_cast<int32_t>(d.device_type));
    Serializer<int32_t>::Write(strm, d.device_id);
  }
  static bool Read(Stream* strm, DLDevice* d) {
    int32_t type = 0;
    if (!Serializer<int32_t>::Read(strm, &type)) return false;
    d->device_type = static_cast<DLDeviceType>(type);
    return Serializer<int32_t>::Read(strm, &d->device_id);
  }
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_TVM_SUPPORT_SERIALIZER_H_
