// webllm-widget's own stand-in for TVM's src/support/bytes_io.h (absent from the apache-tvm
// wheel): support::Stream over bytes in memory.
#ifndef WEBLLM_WIDGET_SRC_SUPPORT_BYTES_IO_H_
#define WEBLLM_WIDGET_SRC_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Reads from a byte buffer it does not own; the buffer must outlive the stream.
class BytesInStream : public Stream {
 public:
  BytesInStream(const char* data, size_t size) : data_(data), size_(size) {}
  explicit BytesInStream(const std::string& s) : BytesInStream(s.data(), s.size()) {}
  explicit BytesInStream(const ffi::Bytes& b) : BytesInStream(b.data(), b.size()) {}
  explicit BytesInStream(const ffi::String& s) : BytesInStream(s.data(), s.size()) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }  // read-only

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends everything written to a std::string it does not own.
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}

  using Stream::Read;
  using Stream::Write;

  size_t Read(void*, size_t) override { return 0; }  // write-only
  size_t Write(const void* ptr, size_t size) override {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_SRC_SUPPORT_BYTES_IO_H_
