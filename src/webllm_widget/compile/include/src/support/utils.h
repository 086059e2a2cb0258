// webllm-widget's own stand-in for TVM's src/support/utils.h (absent from the wheel):
// the small string helpers the web runtime's sources call.
#ifndef WEBLLM_WIDGET_SRC_SUPPORT_UTILS_H_
#define WEBLLM_WIDGET_SRC_SUPPORT_UTILS_H_

#include <cstring>
#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

inline bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // WEBLLM_WIDGET_SRC_SUPPORT_UTILS_H_
