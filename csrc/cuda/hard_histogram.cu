// 2-D hard histogram on CUDA with numpy.histogram2d's binning (float64 edges), plus the gradient with respect to the
// weights (a gather of the incoming gradient at each point's bin; 0 for dropped points).
// Forward: one block per item; the block bins a tile of kThreads points in parallel (shared memory), then thread t
// adds, in point order, the tile's weights that fall into the cells it owns (cell % kThreads == t). Every cell is
// summed by one thread in point order, as the CPU kernel does: float32/float64 results equal the CPU kernel's bit
// for bit; float16/bfloat16 accumulate in float32 and are rounded once.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include "common.cuh"

namespace kdekit::cuda {
namespace {

template <typename T>
__global__ void hard_hist2d_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, acc_t<T>* out,
                                int64_t N, int64_t bins) {
  __shared__ int64_t cell[kThreads];
  __shared__ acc_t<T> weight[kThreads];
  const int64_t b = blockIdx.x;
  const double lox = rx[2 * b], hix = rx[2 * b + 1], loy = ry[2 * b], hiy = ry[2 * b + 1];
  acc_t<T>* H = out + b * bins * bins;
  for (int64_t n0 = 0; n0 < N; n0 += kThreads) {
    const int64_t n = n0 + threadIdx.x;
    int64_t c = -1;
    if (n < N) {
      const int64_t i = hard_bin(static_cast<double>(x[b * N + n]), lox, hix, bins);
      const int64_t j = hard_bin(static_cast<double>(y[b * N + n]), loy, hiy, bins);
      if (i >= 0 && j >= 0) c = i * bins + j;
      weight[threadIdx.x] = static_cast<acc_t<T>>(w[b * N + n]);
    }
    cell[threadIdx.x] = c;
    __syncthreads();
    const int64_t tile = N - n0 < kThreads ? N - n0 : kThreads;
    for (int64_t p = 0; p < tile; ++p) {
      const int64_t cp = cell[p];
      if (cp >= 0 && cp % kThreads == threadIdx.x) H[cp] += weight[p];
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void hard_hist2d_bwd(const T* grad, const T* x, const T* y, const double* rx, const double* ry, T* gw,
                                int64_t BN, int64_t N, int64_t bins) {
  const int64_t bn = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bn >= BN) return;
  const int64_t b = bn / N;
  const int64_t i = hard_bin(static_cast<double>(x[bn]), rx[2 * b], rx[2 * b + 1], bins);
  const int64_t j = hard_bin(static_cast<double>(y[bn]), ry[2 * b], ry[2 * b + 1], bins);
  gw[bn] = (i >= 0 && j >= 0) ? grad[(b * bins + i) * bins + j] : T(0);
}

void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& rx, const at::Tensor& ry,
                  int64_t bins) {
  check_float_cuda(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, N), got ", x.sizes());
  check_points(y, "y", x);
  check_range(rx, "range_x", x);
  check_range(ry, "range_y", x);
  TORCH_CHECK(bins >= 2, "bins must be >= 2, got ", bins);
}

at::Tensor hard_histogram2d_cuda(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
                                 const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins) {
  check_inputs(x_, y_, rx_, ry_, bins);
  check_points(w_, "weights", x_);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  const auto acc_dtype = at::toOpMathType(x.scalar_type());
  auto acc = at::zeros({B, bins, bins}, x.options().dtype(acc_dtype));
  if (B > 0 && N > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hard_histogram2d_cuda", [&] {
      hard_hist2d_fwd<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, current_stream()>>>(
          x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
          rx.const_data_ptr<double>(), ry.const_data_ptr<double>(), acc.data_ptr<acc_t<scalar_t>>(), N, bins);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return acc_dtype == x.scalar_type() ? acc : acc.to(x.scalar_type());
}

at::Tensor hard_histogram2d_backward_cuda(const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& y_,
                                          const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins) {
  check_inputs(x_, y_, rx_, ry_, bins);
  check_grad(grad_, {x_.size(0), bins, bins}, x_);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  auto grad = grad_.to(x.scalar_type()).contiguous();
  auto gw = at::empty_like(x);
  if (x.numel() == 0) return gw;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "hard_histogram2d_backward_cuda", [&] {
    hard_hist2d_bwd<scalar_t><<<blocks_for(x.numel()), kThreads, 0, current_stream()>>>(
        grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        rx.const_data_ptr<double>(), ry.const_data_ptr<double>(), gw.data_ptr<scalar_t>(), x.numel(), x.size(1),
        bins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gw;
}

}  // namespace
}  // namespace kdekit::cuda

TORCH_LIBRARY_IMPL(kdekit, CUDA, m) {
  m.impl("hard_histogram2d", &kdekit::cuda::hard_histogram2d_cuda);
  m.impl("hard_histogram2d_backward", &kdekit::cuda::hard_histogram2d_backward_cuda);
}
