// Gate math of every cell family, written once for CPU and CUDA.
//
// Contract: pure per-element functions of pre-activations and states. acc_t is the
// accumulation type (float for float/half/bf16, double for double); callers convert
// scalar_t <-> acc_t. No float-only intrinsics: double stays double.
//
// Saved for backward (per element, per step):
//   RNN : h_t (the output itself)
//   LSTM: i, f, g, o (activated) and c_t           -> workspace row [5H] = [i | f | g | o | c]
//   GRU : r, z, n and hn = W_hn h + b_hn           -> workspace row [4H] = [r | z | n | hn]
#pragma once

#include <cmath>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define FUSEDRNN_HD __host__ __device__ __forceinline__
#else
#define FUSEDRNN_HD inline
#endif

namespace fusedrnn::math {

// Elementwise primitives. The math below is written once against these, for scalars here
// and, through a specialisation of Ops (cpp/cpu/vec_ops.h), for SIMD vectors on the CPU.
template <class T, class Enable = void>
struct Ops {
  static FUSEDRNN_HD T exp(T x) {
#if defined(__CUDA_ARCH__)
    return ::exp(x);
#else
    return std::exp(x);
#endif
  }
  static FUSEDRNN_HD T tanh(T x) {
#if defined(__CUDA_ARCH__)
    return ::tanh(x);
#else
    return std::tanh(x);
#endif
  }
  // 1 / x for x >= 1 (the sigmoid and tanh denominators); SIMD types may approximate it.
  static FUSEDRNN_HD T recip(T x) { return T(1) / x; }
  static FUSEDRNN_HD T relu(T x) { return x > T(0) ? x : T(0); }
  // relu'(pre) expressed through h = relu(pre): 1 where h > 0.
  static FUSEDRNN_HD T relu_backward(T dh, T h) { return h > T(0) ? dh : T(0); }
};

template <class T>
FUSEDRNN_HD T exp_(T x) {
  return Ops<T>::exp(x);
}

template <class T>
FUSEDRNN_HD T tanh_(T x) {
  return Ops<T>::tanh(x);
}

template <class T>
FUSEDRNN_HD T sigmoid(T x) {
  return Ops<T>::recip(T(1) + exp_(T(0) - x));
}

// ---- Elman RNN ----------------------------------------------------------------------
template <bool kRelu, class T>
FUSEDRNN_HD T rnn_act(T pre) {
  if constexpr (kRelu) {
    return Ops<T>::relu(pre);
  } else {
    return tanh_(pre);
  }
}

// d(pre) from dh and the activated h (both activations' derivatives are functions of h).
template <bool kRelu, class T>
FUSEDRNN_HD T rnn_act_backward(T dh, T h) {
  if constexpr (kRelu) {
    return Ops<T>::relu_backward(dh, h);
  } else {
    return dh * (T(1) - h * h);
  }
}

// ---- LSTM -----------------------------------------------------------------------------
template <class T>
struct LstmForward {
  T i, f, g, o, c, h;
};

template <class T>
FUSEDRNN_HD LstmForward<T> lstm_forward(T ai, T af, T ag, T ao, T c_prev) {
  LstmForward<T> r;
  r.i = sigmoid(ai);
  r.f = sigmoid(af);
  r.g = tanh_(ag);
  r.o = sigmoid(ao);
  r.c = r.f * c_prev + r.i * r.g;
  r.h = r.o * tanh_(r.c);
  return r;
}

template <class T>
struct LstmBackward {
  T dai, daf, dag, dao;  // gradients of the pre-activations
  T dc_prev;
  T h;  // o * tanh(c), recomputed (needed for the projection's weight gradient)
};

// dh: gradient of h_t (unprojected); dc: gradient of c_t arriving from step t+1.
template <class T>
FUSEDRNN_HD LstmBackward<T> lstm_backward(T dh, T dc, T i, T f, T g, T o, T c, T c_prev) {
  LstmBackward<T> r;
  const T tc = tanh_(c);
  r.h = o * tc;
  const T dct = dc + dh * o * (T(1) - tc * tc);
  r.dao = dh * tc * o * (T(1) - o);
  r.dai = dct * g * i * (T(1) - i);
  r.daf = dct * c_prev * f * (T(1) - f);
  r.dag = dct * i * (T(1) - g * g);
  r.dc_prev = dct * f;
  return r;
}

// ---- GRU ------------------------------------------------------------------------------
// torch.nn semantics: n = tanh(x_n + r * (W_hn h + b_hn)).
template <class T>
struct GruForward {
  T r, z, n, hn, h;
};

template <class T>
FUSEDRNN_HD GruForward<T> gru_forward(T xr, T xz, T xn, T hr, T hz, T hn, T h_prev) {
  GruForward<T> o;
  o.r = sigmoid(xr + hr);
  o.z = sigmoid(xz + hz);
  o.hn = hn;
  o.n = tanh_(xn + o.r * hn);
  o.h = (T(1) - o.z) * o.n + o.z * h_prev;
  return o;
}

template <class T>
struct GruBackward {
  T dr, dz, dn;  // pre-activation gradients on the input side (x_r, x_z, x_n)
  T dhn;         // gradient of (W_hn h + b_hn): dn * r
  T dh_prev;     // the direct path z * dh (the GEMM path is added by the caller)
};

template <class T>
FUSEDRNN_HD GruBackward<T> gru_backward(T dh, T r, T z, T n, T hn, T h_prev) {
  GruBackward<T> o;
  const T dnt = dh * (T(1) - z) * (T(1) - n * n);
  o.dn = dnt;
  o.dhn = dnt * r;
  o.dr = dnt * hn * r * (T(1) - r);
  o.dz = dh * (h_prev - n) * z * (T(1) - z);
  o.dh_prev = dh * z;
  return o;
}

}  // namespace fusedrnn::math
