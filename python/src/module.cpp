// polygrad._core: multi-head attention forward and backward, exact or polynomial, on NumPy arrays
// [B, H, n, d_h]. The Python package polygrad.torch builds a torch.autograd.Function on it.
//
// forward() returns the output and a SavedAttention: per sequence the AttentionContext that the
// method's forward pass made (normalisers and plans, O(n H) numbers). Its backward() takes the
// same q, k, v, the output and the output's gradient, so that nothing else is kept alive between
// the passes. Both release the GIL while they compute.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "polygrad/attention/factory.hpp"

namespace polygrad::python {
namespace {

/// What one call asks for, as the keywords of forward() give it.
struct CallOptions {
  bool causal = true;
  double scale = 1.0;
  double score_bound = 0.0;  ///< AttentionShape::score_bound (QK normalisation), 0: none
  std::string method = "exact";
  PolyOptions poly;
  int threads = 0;

  AttentionShape shape(Index heads) const {
    AttentionShape s(heads, causal, scale, score_bound);
    s.threading.threads = threads;
    s.inputs_checked = true;  // the arrays were checked with their [b, h, i, j] indices
    return s;
  }
};

/// How refusals name the options to a Python caller: polygrad.torch's keywords, and not at all
/// where it has none (the maximum degree, the memory budget).
OptionNames python_option_names() {
  OptionNames n;
  n.degree = "degree=";
  n.epsilon = "epsilon=";
  n.max_degree = "";
  n.bound = "bound=R";
  n.qk_norm = "qk_norm=tau";
  n.allow_causal_data_bound = "allow_causal_data_bound=True";
  n.chunk = "chunk=";
  n.memory_budget = "";
  return n;
}

/// The state forward() leaves for backward(), for either scalar type.
class SavedAttention {
 public:
  virtual ~SavedAttention() = default;
  /// (dq, dk, dv), each [B, H, n, d_h], from the forward pass's q, k, v, its output o and do.
  virtual py::tuple backward(const py::array& q, const py::array& k, const py::array& v,
                             const py::array& o, const py::array& d_o) const = 0;
  /// The plans, per sequence and per head.
  virtual std::vector<std::vector<HeadPlan>> plans() const = 0;
};

template <class T>
class SavedAttentionOf final : public SavedAttention {
 public:
  SavedAttentionOf(BatchShape shape, AttentionShape attention)
      : shape_(shape), attention_(attention) {}

  /// Runs `method` on every sequence of q, k, v into o (all [B, H, n, d_h]).
  void forward(const AttentionMethod<T>& method, const T* q, const T* k, const T* v, T* o) {
    Matrix<T> Q, K, V, O;  // n x (H d_h), one sequence at a time
    for (Index b = 0; b < shape_.batch; ++b) {
      gather(q, shape_, b, Q);
      gather(k, shape_, b, K);
      gather(v, shape_, b, V);
      contexts_.push_back(
          within_sequence(b, [&] { return method.forward(Q, K, V, attention_, O); }));
      scatter(O, shape_, b, o);
    }
  }

  py::tuple backward(const py::array& q, const py::array& k, const py::array& v, const py::array& o,
                     const py::array& d_o) const override {
    const char* names[] = {"q", "k", "v", "o", "grad_output"};
    const py::array* arrays[] = {&q, &k, &v, &o, &d_o};
    for (int a = 0; a < 5; ++a) {
      const BatchShape s = batch_shape<T>(*arrays[a], names[a]);
      require<ShapeError>(s == shape_, names[a], " has shape ", s.str(), " in backward, but the ",
                          "forward pass had ", shape_.str(), ": pass the forward pass's q, k, v, ",
                          "its output and a gradient of the output's shape");
    }
    require_finite(d_o.unchecked<T>().data(0, 0, 0, 0), shape_, "grad_output");
    const std::vector<py::ssize_t> dims{shape_.batch, shape_.heads, shape_.n, shape_.head_dim};
    py::array_t<T> dq(dims), dk(dims), dv(dims);
    const T* in[] = {static_cast<const T*>(q.data()), static_cast<const T*>(k.data()),
                     static_cast<const T*>(v.data()), static_cast<const T*>(o.data()),
                     static_cast<const T*>(d_o.data())};
    T* out[] = {dq.mutable_data(), dk.mutable_data(), dv.mutable_data()};
    {
      py::gil_scoped_release release;
      Matrix<T> Q, K, V, O, dO, dQ, dK, dV;
      for (Index b = 0; b < shape_.batch; ++b) {
        gather(in[0], shape_, b, Q);
        gather(in[1], shape_, b, K);
        gather(in[2], shape_, b, V);
        gather(in[3], shape_, b, O);
        gather(in[4], shape_, b, dO);
        within_sequence(b, [&] {
          contexts_[std::size_t(b)]->backward(Q, K, V, O, dO, dQ, dK, dV);
          return 0;
        });
        scatter(dQ, shape_, b, out[0]);
        scatter(dK, shape_, b, out[1]);
        scatter(dV, shape_, b, out[2]);
      }
    }
    return py::make_tuple(dq, dk, dv);
  }

  std::vector<std::vector<HeadPlan>> plans() const override {
    std::vector<std::vector<HeadPlan>> out;
    for (const auto& context : contexts_) out.push_back(context->plans());
    return out;
  }

 private:
  /// f(), with "sequence b" as the location of its errors when the batch has more than one.
  template <class F>
  auto within_sequence(Index b, F&& f) const {
    if (shape_.batch == 1) return f();
    return within(detail::concat("sequence ", b), std::forward<F>(f));
  }

  BatchShape shape_;
  AttentionShape attention_;
  std::vector<std::unique_ptr<AttentionContext<T>>> contexts_;  // one per sequence
};

template <class T>
py::tuple forward_as(const py::array& q, const py::array& k, const py::array& v,
                     const CallOptions& options) {
  const BatchShape s = batch_shape<T>(q, "q");
  const char* names[] = {"k", "v"};
  const py::array* others[] = {&k, &v};
  for (int a = 0; a < 2; ++a) {
    const BatchShape other = batch_shape<T>(*others[a], names[a]);
    require<ShapeError>(other == s, names[a], " has shape ", other.str(), " but q has ", s.str(),
                        ": q, k and v must have one shape [batch, heads, n, head_dim]");
  }
  const T* in[] = {static_cast<const T*>(q.data()), static_cast<const T*>(k.data()),
                   static_cast<const T*>(v.data())};
  require_finite(in[0], s, "q");
  require_finite(in[1], s, "k");
  require_finite(in[2], s, "v");
  const auto method = make_attention<T>(options.method, options.poly);
  auto saved = std::make_shared<SavedAttentionOf<T>>(s, options.shape(s.heads));
  py::array_t<T> o(std::vector<py::ssize_t>{s.batch, s.heads, s.n, s.head_dim});
  T* out = o.mutable_data();
  {
    py::gil_scoped_release release;
    saved->forward(*method, in[0], in[1], in[2], out);
  }
  return py::make_tuple(o, std::shared_ptr<SavedAttention>(saved));
}

py::tuple forward(const py::array& q, const py::array& k, const py::array& v, bool causal,
                  double scale, double score_bound, const std::string& method,
                  const std::string& route, const std::string& family, int degree, double epsilon,
                  double bound, Index audit_rows, bool allow_causal_data_bound, Index chunk,
                  int threads) {
  CallOptions options;
  options.causal = causal;
  options.scale = scale;
  options.score_bound = score_bound;
  options.method = method;
  options.threads = threads;
  options.poly.route = parse_route(route);
  options.poly.names = python_option_names();
  options.poly.family = parse_family(family);
  require<PlanError>(degree >= 0, "degree must be positive (or None to choose it from epsilon), ",
                     "got ", degree);
  options.poly.degree = degree;
  require<PlanError>(epsilon > 0 && epsilon < 1, "epsilon must lie in (0, 1), got ", epsilon);
  options.poly.epsilon = epsilon;
  require<PlanError>(bound >= 0 && std::isfinite(bound), "bound must be finite and positive ",
                     "(or None to take it from QK normalisation or the data), got ", bound);
  options.poly.bound = bound;
  require<PlanError>(audit_rows >= 0, "audit must be >= 0 rows, got ", audit_rows);
  options.poly.audit_rows = audit_rows;
  options.poly.allow_causal_data_bound = allow_causal_data_bound;
  require<PlanError>(chunk >= 1, "chunk must be at least 1 row, got ", chunk);
  options.poly.chunk = chunk;
  require<PlanError>(threads >= 0, "threads must be >= 0 (0: OpenMP's default), got ", threads);
  const py::dtype dtype = q.dtype();
  if (dtype.is(py::dtype::of<float>())) return forward_as<float>(q, k, v, options);
  if (dtype.is(py::dtype::of<double>())) return forward_as<double>(q, k, v, options);
  throw py::type_error(detail::concat("q has dtype ", dtype_name(q), "; polygrad computes in ",
                                      "float32 or float64: convert the inputs to one of them"));
}

/// Registers a Python exception type named `name` with these bases, raised for E.
template <class E>
void register_error(py::module_& m, const char* name, py::handle bases) {
  static py::exception<E> type(m, name, bases.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const E& e) {
      type(e.what());
    }
  });
}

}  // namespace
}  // namespace polygrad::python

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  using namespace polygrad;
  using namespace polygrad::python;
  m.doc() = "polygrad's attention core on NumPy arrays; see polygrad.torch for the PyTorch API";

  // Translators run newest first, so the base class is registered before its subclasses.
  register_error<Error>(m, "Error", PyExc_RuntimeError);
  const py::object error = m.attr("Error");
  register_error<ShapeError>(m, "ShapeError", py::make_tuple(error, py::handle(PyExc_ValueError)));
  register_error<NumericError>(m, "NumericError",
                               py::make_tuple(error, py::handle(PyExc_ValueError)));
  register_error<PlanError>(m, "PlanError", error);

  py::class_<HeadPlan>(m, "HeadPlan", "How one head was computed (attention/plan.hpp)")
      .def_property_readonly("method", [](const HeadPlan& p) { return to_string(p.method); })
      .def_readonly("n", &HeadPlan::n)
      .def_readonly("head_dim", &HeadPlan::head_dim)
      .def_readonly("causal", &HeadPlan::causal)
      .def_readonly("exactly_causal", &HeadPlan::exactly_causal)
      .def_property_readonly("route", [](const HeadPlan& p) { return to_string(p.route); })
      .def_property_readonly("family", [](const HeadPlan& p) { return to_string(p.family); })
      .def_property_readonly("bound_source",
                             [](const HeadPlan& p) { return to_string(p.bound_source); })
      .def_readonly("bound", &HeadPlan::bound)
      .def_readonly("cauchy_schwarz_bound", &HeadPlan::cauchy_schwarz_bound)
      .def_readonly("certified", &HeadPlan::certified)
      .def_readonly("keys_centred", &HeadPlan::keys_centred)
      .def_readonly("degree", &HeadPlan::degree)
      .def_readonly("rank", &HeadPlan::rank)
      .def_readonly("exp_error", &HeadPlan::exp_error)
      .def_readonly("output_error", &HeadPlan::output_error)
      .def_readonly("exact_cost", &HeadPlan::exact_cost)
      .def_readonly("poly_cost", &HeadPlan::poly_cost)
      .def_readonly("exact_seconds", &HeadPlan::exact_seconds)
      .def_readonly("poly_seconds", &HeadPlan::poly_seconds)
      .def_readonly("rates_source", &HeadPlan::rates_source)
      .def_readonly("poly_refused", &HeadPlan::poly_refused)
      .def_readonly("threads", &HeadPlan::threads)
      .def_readonly("audit_rows", &HeadPlan::audit_rows)
      .def_readonly("audit_error", &HeadPlan::audit_error)
      .def("describe", &HeadPlan::describe)
      .def("__repr__", [](const HeadPlan& p) { return "<HeadPlan " + p.describe() + ">"; });

  py::class_<SavedAttention, std::shared_ptr<SavedAttention>>(
      m, "SavedAttention", "What forward() kept for backward(): normalisers and plans")
      .def("backward", &SavedAttention::backward, py::arg("q"), py::arg("k"), py::arg("v"),
           py::arg("o"), py::arg("grad_output"),
           "(dq, dk, dv) from the forward pass's q, k, v, its output o and grad_output")
      .def("plans", &SavedAttention::plans, "the head plans, per sequence and per head");

  m.def("forward", &forward, py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(),
        py::arg("causal"), py::arg("scale"), py::arg("score_bound") = 0.0,
        py::arg("method") = "exact", py::arg("route") = "adjoint", py::arg("family") = "chebyshev",
        py::arg("degree") = 0, py::arg("epsilon") = 1e-3, py::arg("bound") = 0.0,
        py::arg("audit") = Index(0), py::arg("allow_causal_data_bound") = false,
        py::arg("chunk") = Index(64), py::arg("threads") = 0,
        "(o, saved): attention of q, k, v (C-contiguous [B, H, n, d_h], float32 or float64)");
}
