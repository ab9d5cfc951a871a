#pragma once
// The configuration of a Transformer: everything a checkpoint's metadata records.

#include <cmath>
#include <optional>

#include "polygrad/core/error.hpp"

namespace polygrad {

/// The configuration of one multi-head attention layer, with its defaults and its validation
/// (the one place for both: TransformerConfig::attention() makes a block's from the model's).
struct AttentionConfig {
  Index d_model = 64;  ///< D, the width of the layer's input and output
  Index heads = 4;     ///< H; the head size is d_h = D / H
  bool causal = true;  ///< row i attends to rows 0..i only
  /// c in S = c Q K^T; 1/sqrt(d_h) when absent. Ignored when qk_norm is set.
  std::optional<double> scale;
  /// QK normalisation: if set to tau, scores are tau (q/|q|).(k/|k|) per head, so |S| <= tau.
  std::optional<double> qk_norm;

  /// d_h = D / H.
  Index head_dim() const { return d_model / heads; }
  /// The c the method receives: tau under QK normalisation, else scale or 1/sqrt(d_h).
  double attention_scale() const {
    if (qk_norm) return *qk_norm;
    return scale ? *scale : 1.0 / std::sqrt(double(head_dim()));
  }

  /// Throws ShapeError (or Error) naming the first inconsistent field.
  void validate() const {
    require<ShapeError>(d_model >= 1, "d_model must be at least 1, got ", d_model);
    require<ShapeError>(heads >= 1 && d_model % heads == 0, "d_model (", d_model,
                        ") must be a positive multiple of the number of heads (", heads, ")");
    require<Error>(!scale || (std::isfinite(*scale) && *scale > 0),
                   "the attention scale must be finite and positive, got ", scale ? *scale : 0.0);
    require<Error>(!qk_norm || (std::isfinite(*qk_norm) && *qk_norm > 0),
                   "qk_norm (tau) must be finite and positive, got ", qk_norm ? *qk_norm : 0.0);
  }
};

/// The shape of a Transformer (layers, widths, heads, mask, attention scale), as a checkpoint's
/// metadata records it.
struct TransformerConfig {
  Index layers = 2;    ///< L, the number of blocks
  Index d_model = 64;  ///< D, the width of the residual stream
  Index heads = 4;     ///< H; the head size is d_h = D / H
  Index d_ff = 256;    ///< F, the hidden width of each MLP
  bool causal = true;  ///< causal mask in every attention layer
  /// c in S = c Q K^T; 1/sqrt(d_h) when absent. Ignored when qk_norm is set.
  std::optional<double> scale;
  /// QK normalisation: if set to tau, scores are tau (q/|q|).(k/|k|) per head, so |S| <= tau.
  std::optional<double> qk_norm;

  /// The model of polygrad's demo, benchmarks and accuracy table: 4 causal layers, d_model 64,
  /// 8 heads (d_h 8), MLP 256, QK normalisation tau = 2 (so R = 2 is certified).
  static TransformerConfig demo() {
    TransformerConfig c;
    c.layers = 4;
    c.d_model = 64;
    c.heads = 8;
    c.d_ff = 256;
    c.causal = true;
    c.qk_norm = 2.0;
    return c;
  }

  /// The configuration of every block's attention layer.
  AttentionConfig attention() const {
    AttentionConfig a;
    a.d_model = d_model;
    a.heads = heads;
    a.causal = causal;
    a.scale = scale;
    a.qk_norm = qk_norm;
    return a;
  }
  /// d_h = D / H.
  Index head_dim() const { return attention().head_dim(); }
  /// c in S = c Q K^T, as AttentionConfig::attention_scale.
  double attention_scale() const { return attention().attention_scale(); }

  /// Throws ShapeError (or Error) naming the first inconsistent field.
  void validate() const {
    require<ShapeError>(layers >= 1, "layers must be at least 1, got ", layers);
    attention().validate();
    require<ShapeError>(d_ff >= 1, "d_ff must be at least 1, got ", d_ff);
  }
};

}  // namespace polygrad
