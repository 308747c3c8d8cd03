// Dropout masks between stacked layers (stack_driver.h), drawn as at::dropout draws them:
// empty_like(y).bernoulli_(1 - p) on the default generator, then / (1 - p). A seeded run
// therefore reproduces torch.nn's masks, and the generator advances exactly as torch.nn's
// would (the next torch.rand after a fused step equals the one after a torch.nn step).
#pragma once

#include <ATen/ATen.h>

namespace fusedrnn {

// Values 0 or 1/(1-p), y's shape and dtype; p >= 1 gives zeros.
at::Tensor dropout_mask(const at::Tensor& y, double p);

// The CPU sampler's draws equal at::bernoulli_'s on this torch (checked once per process on a
// private generator); false means dropout_mask calls at::bernoulli_ itself. For tests.
bool cpu_mask_sampler_exact();

}  // namespace fusedrnn
