// webllm-widget's own stand-in for TVM's src/support/arena.h (absent from the wheel):
// scratch memory for one RPC message, handed out in pieces and released all at once.
#ifndef WEBLLM_WIDGET_SRC_SUPPORT_ARENA_H_
#define WEBLLM_WIDGET_SRC_SUPPORT_ARENA_H_

#include <cstddef>
#include <memory>
#include <new>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  // Uninitialized room for `count` values of a trivial type T, valid until RecycleAll().
  template <typename T>
  T* allocate_(size_t count) {
    static_assert(std::is_trivial<T>::value, "the arena holds trivial types only");
    size_t bytes = sizeof(T) * (count == 0 ? 1 : count);
    size_t align = alignof(T) > alignof(std::max_align_t) ? alignof(T) : alignof(std::max_align_t);
    // Each request is its own block: RPC messages are few and short-lived.
    blocks_.emplace_back(new (std::align_val_t(align)) char[bytes], Deleter{align});
    return reinterpret_cast<T*>(blocks_.back().get());
  }

  // Frees everything handed out so far.
  void RecycleAll() { blocks_.clear(); }

 private:
  struct Deleter {
    size_t align;
    void operator()(char* p) const { ::operator delete[](p, std::align_val_t(align)); }
  };
  std::vector<std::unique_ptr<char[], Deleter>> blocks_;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_SRC_SUPPORT_ARENA_H_
