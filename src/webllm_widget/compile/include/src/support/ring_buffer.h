// webllm-widget's own stand-in for TVM's src/support/ring_buffer.h (absent from the wheel):
// the FIFO byte queue the RPC endpoint uses between its channel and its message parser.
#ifndef WEBLLM_WIDGET_SRC_SUPPORT_RING_BUFFER_H_
#define WEBLLM_WIDGET_SRC_SUPPORT_RING_BUFFER_H_

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

// A growable circular buffer of bytes: writes go to the tail, reads come from the head.
class RingBuffer {
 public:
  RingBuffer() : buf_(kInitialCapacity) {}

  // Bytes written and not yet read.
  size_t bytes_available() const { return size_; }

  // Makes room for at least `n` bytes in total without moving what is queued.
  void Reserve(size_t n) {
    if (n <= buf_.size()) return;
    std::vector<char> bigger(std::max(n, buf_.size() * 2));
    CopyOut(bigger.data(), size_);
    buf_.swap(bigger);
    head_ = 0;
  }

  // Removes `size` bytes from the head into `data`; the caller asks for at most bytes_available().
  void Read(void* data, size_t size) {
    size = std::min(size, size_);
    CopyOut(static_cast<char*>(data), size);
    Drop(size);
  }

  // Appends `size` bytes at the tail, growing as needed.
  void Write(const void* data, size_t size) {
    Reserve(size_ + size);
    const char* src = static_cast<const char*>(data);
    size_t tail = (head_ + size_) % buf_.size();
    size_t first = std::min(size, buf_.size() - tail);
    std::memcpy(buf_.data() + tail, src, first);
    std::memcpy(buf_.data(), src + first, size - first);
    size_ += size;
  }

  // Hands up to `max_bytes` contiguous queued bytes to `f(const void*, size_t) -> consumed`
  // and drops what it consumed. Returns the number consumed.
  template <typename F>
  size_t ReadWithCallback(F f, size_t max_bytes) {
    size_t n = std::min({max_bytes, size_, buf_.size() - head_});
    if (n == 0) return 0;
    size_t used = f(static_cast<const void*>(buf_.data() + head_), n);
    Drop(used);
    return used;
  }

  // Lets `f(void*, size_t) -> produced` fill up to `max_bytes` contiguous free bytes at the tail.
  // Returns the number produced.
  template <typename F>
  size_t WriteWithCallback(F f, size_t max_bytes) {
    Reserve(size_ + max_bytes);
    size_t tail = (head_ + size_) % buf_.size();
    // Free space runs from the tail to the end of the buffer, or up to the head once wrapped.
    size_t room = std::min(max_bytes, tail >= head_ ? buf_.size() - tail : head_ - tail);
    size_t got = f(static_cast<void*>(buf_.data() + tail), room);
    size_ += got;
    return got;
  }

 private:
  static constexpr size_t kInitialCapacity = 1024;

  void CopyOut(char* dst, size_t n) const {
    size_t first = std::min(n, buf_.size() - head_);
    std::memcpy(dst, buf_.data() + head_, first);
    std::memcpy(dst + first, buf_.data(), n - first);
  }
  void Drop(size_t n) {
    size_ -= n;
    head_ = size_ == 0 ? 0 : (head_ + n) % buf_.size();
  }

  std::vector<char> buf_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_SRC_SUPPORT_RING_BUFFER_H_
