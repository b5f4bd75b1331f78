// Fused crop_area view: bilinear resize (half-pixel centres, edge clamped, no antialias) of one
// [h, w, C] window of a raw tile + per-band normalisation, into float32 [size, size, C].
//
// Same arithmetic, in the same order and float32 rounding, as the numpy path of
// seamo_jax/data/augment.py:crop_resize_normalise (resize.resize_bilinear, then (x - mean) / std):
//   rows = a + (b - a) * wy;  v = rows[x0] + (rows[x1] - rows[x0]) * wx;  out = (v - mean) / std
// built with -ffp-contract=off, so results are bitwise equal. One source row pair and one
// scratch row per output row: the window is read once and the view written once.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace {

// kChannels > 0: the band count known at compile time (S1 2, S2 12 / 13), so the strided
// (flipped / rotated tile) band loop unrolls; 0: any count (`channels_arg`).
template <typename T, int kChannels>
void ResizeNormalise(const T* src, int64_t sy, int64_t sx, int64_t sc, int64_t w, int64_t channels_arg,
                     int64_t size, const int64_t* y0, const int64_t* y1, const float* wy, const int64_t* x0,
                     const int64_t* x1, const float* wx, const float* mean, const float* stdv, float* out) {
  const int64_t channels = kChannels > 0 ? kChannels : channels_arg;
  const int64_t row_len = w * channels;
  std::vector<float> row(static_cast<size_t>(row_len));
  float* r = row.data();
  // Horizontal taps per output element k = j * C + c of a view row (index of both taps in the
  // scratch row, weight, band mean and std), so the horizontal pass is one flat loop.
  const int64_t out_len = size * channels;
  std::vector<int32_t> ia(static_cast<size_t>(out_len)), ib(static_cast<size_t>(out_len));
  std::vector<float> wk(static_cast<size_t>(out_len)), mk(static_cast<size_t>(out_len)),
      sk(static_cast<size_t>(out_len));
  for (int64_t j = 0; j < size; ++j) {
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t k = j * channels + c;
      ia[k] = static_cast<int32_t>(x0[j] * channels + c);
      ib[k] = static_cast<int32_t>(x1[j] * channels + c);
      wk[k] = wx[j];
      mk[k] = mean[c];
      sk[k] = stdv[c];
    }
  }
  const bool contiguous = sc == 1 && sx == channels;
  for (int64_t i = 0; i < size; ++i) {
    const T* pa = src + y0[i] * sy;
    const T* pb = src + y1[i] * sy;
    const float wyi = wy[i];
    if (contiguous) {
      for (int64_t k = 0; k < row_len; ++k) {
        const float a = static_cast<float>(pa[k]);
        const float b = static_cast<float>(pb[k]);
        r[k] = a + (b - a) * wyi;
      }
    } else {
      for (int64_t x = 0; x < w; ++x) {
        for (int64_t c = 0; c < channels; ++c) {
          const float a = static_cast<float>(pa[x * sx + c * sc]);
          const float b = static_cast<float>(pb[x * sx + c * sc]);
          r[x * channels + c] = a + (b - a) * wyi;
        }
      }
    }
    float* o = out + i * out_len;
    for (int64_t k = 0; k < out_len; ++k) {  // gathers: vectorises across pixels and bands alike
      const float a = r[ia[k]];
      const float v = a + (r[ib[k]] - a) * wk[k];
      o[k] = (v - mk[k]) / sk[k];
    }
  }
}

template <typename T>
void Dispatch(const T* src, int64_t sy, int64_t sx, int64_t sc, int64_t w, int64_t channels, int64_t size,
              const int64_t* y0, const int64_t* y1, const float* wy, const int64_t* x0, const int64_t* x1,
              const float* wx, const float* mean, const float* stdv, float* out) {
  switch (channels) {
    case 2:
      return ResizeNormalise<T, 2>(src, sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx, mean, stdv, out);
    case 12:
      return ResizeNormalise<T, 12>(src, sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx, mean, stdv, out);
    case 13:
      return ResizeNormalise<T, 13>(src, sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx, mean, stdv, out);
    default:
      return ResizeNormalise<T, 0>(src, sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx, mean, stdv, out);
  }
}

}  // namespace

extern "C" {

// dtype: 0 uint16, 1 uint8, 2 float32. Strides in elements (any sign). Returns 0, or -1 for an unknown dtype.
int SeamoResizeNormalise(int dtype, const void* src, int64_t sy, int64_t sx, int64_t sc, int64_t w,
                         int64_t channels, int64_t size, const int64_t* y0, const int64_t* y1, const float* wy,
                         const int64_t* x0, const int64_t* x1, const float* wx, const float* mean,
                         const float* stdv, float* out) {
  switch (dtype) {
    case 0:
      Dispatch(static_cast<const uint16_t*>(src), sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx,
                      mean, stdv, out);
      return 0;
    case 1:
      Dispatch(static_cast<const uint8_t*>(src), sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx,
                      mean, stdv, out);
      return 0;
    case 2:
      Dispatch(static_cast<const float*>(src), sy, sx, sc, w, channels, size, y0, y1, wy, x0, x1, wx,
                      mean, stdv, out);
      return 0;
    default:
      return -1;
  }
}

}  // extern "C"
