// Dtype dispatch shared by every backend: calls f(T{}) for the first T in Ts that matches the
// tensor's scalar type, and otherwise raises an error naming the op and what it accepts.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace fusedrnn {

template <class... Ts, class F>
void dispatch_dtype(at::ScalarType st, const char* op, const char* expected, F&& f) {
  const bool done = ((st == c10::CppTypeToScalarType<Ts>::value ? (f(Ts{}), true) : false) || ...);
  TORCH_CHECK(done, op, ": expected input of dtype ", expected, ", got ", st);
}

}  // namespace fusedrnn
