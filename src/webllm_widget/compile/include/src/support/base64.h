// webllm-widget's own stand-in for TVM's src/support/base64.h (absent from the wheel):
// support::Stream adapters that encode to / decode from standard base64 (RFC 4648, padded),
// used when tensors travel inside JSON.
#ifndef WEBLLM_WIDGET_SRC_SUPPORT_BASE64_H_
#define WEBLLM_WIDGET_SRC_SUPPORT_BASE64_H_

#include <tvm/support/io.h>

#include <cctype>
#include <cstdint>

namespace tvm {
namespace support {

namespace base64 {
inline const char* Alphabet() {
  return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}
// Value of one base64 digit, or -1 for anything else (padding, whitespace).
inline int Digit(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace base64

// Encodes bytes written to it into `out`. Call Finish() once at the end to flush the last group.
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void*, size_t) override { return 0; }
  size_t Write(const void* ptr, size_t size) override {
    const uint8_t* p = static_cast<const uint8_t*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      group_[filled_++] = p[i];
      if (filled_ == 3) EmitGroup();
    }
    return size;
  }
  void Finish() {
    if (filled_ != 0) EmitGroup();
  }

 private:
  void EmitGroup() {
    const char* abc = base64::Alphabet();
    uint32_t v = (uint32_t(group_[0]) << 16) | (uint32_t(filled_ > 1 ? group_[1] : 0) << 8) |
                 uint32_t(filled_ > 2 ? group_[2] : 0);
    char chars[4] = {abc[(v >> 18) & 63], abc[(v >> 12) & 63], abc[(v >> 6) & 63], abc[v & 63]};
    if (filled_ < 3) chars[3] = '=';
    if (filled_ < 2) chars[2] = '=';
    out_->Write(static_cast<const void*>(chars), 4);
    filled_ = 0;
  }

  Stream* out_;
  uint8_t group_[3] = {0, 0, 0};
  int filled_ = 0;
};

// Decodes base64 text read from `in`. Call InitPosition() before the first read.
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}

  using Stream::Read;
  using Stream::Write;

  // Starts decoding at the next base64 digit (skips leading whitespace).
  void InitPosition() {
    ready_ = 0;
    pos_ = 0;
    done_ = false;
  }

  size_t Read(void* ptr, size_t size) override {
    uint8_t* out = static_cast<uint8_t*>(ptr);
    size_t n = 0;
    while (n < size) {
      if (pos_ == ready_ && !DecodeGroup()) break;
      out[n++] = bytes_[pos_++];
    }
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }

 private:
  // Decodes the next 4 characters into up to 3 bytes; false at the end of the data.
  bool DecodeGroup() {
    if (done_) return false;
    int digits[4];
    int got = 0;
    while (got < 4) {
      char c;
      if (in_->Read(&c, 1) != 1) break;
      if (c == '=') {
        digits[got++] = -1;
        continue;
      }
      if (std::isspace(static_cast<unsigned char>(c))) continue;
      int d = base64::Digit(c);
      if (d < 0) break;
      digits[got++] = d;
    }
    int valid = 0;
    while (valid < got && digits[valid] >= 0) ++valid;
    if (valid < 2) {
      done_ = true;
      return false;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 6) | uint32_t(i < valid ? digits[i] : 0);
    bytes_[0] = uint8_t(v >> 16);
    bytes_[1] = uint8_t(v >> 8);
    bytes_[2] = uint8_t(v);
    ready_ = valid - 1;  // 2 digits -> 1 byte, 3 -> 2, 4 -> 3
    pos_ = 0;
    if (valid < 4) done_ = true;
    return true;
  }

  Stream* in_;
  uint8_t bytes_[3] = {0, 0, 0};
  int ready_ = 0;
  int pos_ = 0;
  bool done_ = false;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_SRC_SUPPORT_BASE64_H_
