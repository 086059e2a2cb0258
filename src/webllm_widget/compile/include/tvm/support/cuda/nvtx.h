// webllm-widget's own stand-in for <tvm/support/cuda/nvtx.h>: NVTX profiling ranges only mean
// something under CUDA, so in the wasm runtime a range is an object that does nothing.
#ifndef WEBLLM_WIDGET_TVM_SUPPORT_CUDA_NVTX_H_
#define WEBLLM_WIDGET_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_TVM_SUPPORT_CUDA_NVTX_H_
