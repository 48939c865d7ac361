// Op definitions and shape functions of herald's embedding ops (kernels live in kernels/tf/).
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace herald {
namespace {

using ::tensorflow::Status;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

// Row width of a resource input from its handle data, or unknown.
DimensionHandle ResourceRowWidth(InferenceContext* c, int input) {
  auto* handle_data = c->input_handle_shapes_and_types(input);
  if (handle_data == nullptr || handle_data->empty()) return c->UnknownDim();
  ShapeHandle shape = (*handle_data)[0].shape;
  if (!c->RankKnown(shape) || c->Rank(shape) != 2) return c->UnknownDim();
  return c->Dim(shape, 1);
}

Status LookupShape(InferenceContext* c) {
  ShapeHandle ids, splits;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &ids));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &splits));
  std::string combiner;
  TF_RETURN_IF_ERROR(c->GetAttr("combiner", &combiner));
  DimensionHandle rows = c->Dim(ids, 0);
  if (combiner != "none") {
    TF_RETURN_IF_ERROR(c->Subtract(c->Dim(splits, 0), 1, &rows));
  }
  c->set_output(0, c->Matrix(rows, ResourceRowWidth(c, 0)));
  return ::tensorflow::OkStatus();
}

Status LookupGradShape(InferenceContext* c) {
  ShapeHandle grad, ids, splits;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &grad));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &ids));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &splits));
  c->set_output(0, c->Vector(c->UnknownDim()));
  c->set_output(1, c->Matrix(c->UnknownDim(), c->Dim(grad, 1)));
  return ::tensorflow::OkStatus();
}

Status GatherRowsShape(InferenceContext* c) {
  ShapeHandle ids;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &ids));
  c->set_output(0, c->Matrix(c->Dim(ids, 0), ResourceRowWidth(c, 0)));
  return ::tensorflow::OkStatus();
}

Status InitRowsShape(InferenceContext* c) {
  ShapeHandle keys;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 1, &keys));
  int64_t dim;
  TF_RETURN_IF_ERROR(c->GetAttr("dim", &dim));
  c->set_output(0, c->Matrix(c->Dim(keys, 0), dim));
  return ::tensorflow::OkStatus();
}

}  // namespace

REGISTER_OP("Herald>Lookup")
    .Input("storage: resource")
    .Input("slot_ids: int64")
    .Input("row_splits: int64")
    .Attr("combiner: {'none', 'sum', 'mean', 'sqrtn'} = 'sum'")
    .Output("embeddings: float")
    .SetShapeFn(LookupShape)
    .Doc(R"doc(
Gathers rows of slot storage (slots, dim) and pools each bag ids[splits[b]:splits[b+1]]
(sum, mean, sqrtn) into (batch, dim); combiner 'none' returns one row per id, (n, dim).
)doc");

REGISTER_OP("Herald>LookupGrad")
    .Input("grad: float")
    .Input("slot_ids: int64")
    .Input("row_splits: int64")
    .Attr("combiner: {'none', 'sum', 'mean', 'sqrtn'} = 'sum'")
    .Output("unique_slots: int64")
    .Output("summed_grads: float")
    .SetShapeFn(LookupGradShape)
    .Doc(R"doc(
Gradient of Lookup: the distinct slot ids in order of first appearance and, for each, the sum
of the gradients of every id using it (deterministic order). Never a dense (slots, dim) tensor.
)doc");

REGISTER_OP("Herald>SparseApply")
    .Input("storage: resource")
    .Input("state: resource")
    .Input("versions: resource")
    .Input("unique_slots: int64")
    .Input("grads: float")
    .Input("learning_rate: float")
    .Attr("optimizer: {'sgd', 'adagrad', 'adam'}")
    .Attr("beta1: float = 0.9")
    .Attr("beta2: float = 0.999")
    .Attr("epsilon: float = 1e-7")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::NoOutputs)
    .Doc(R"doc(
Applies summed gradients to distinct slots of storage (slots, dim) with the sparse optimizer of
kernels/core/optimizer.h (state (slots, 0|dim|2*dim), versions (slots,) += 1). Rejects
out-of-range or repeated slots and non-finite gradients without changing anything.
)doc");

REGISTER_OP("Herald>InitRows")
    .Input("keys: int64")
    .Attr("dim: int >= 1")
    .Attr("seed: int = 0")
    .Attr("initializer: {'uniform', 'normal', 'zeros'} = 'uniform'")
    .Attr("a: float = -0.05")
    .Attr("b: float = 0.05")
    .Output("rows: float")
    .SetShapeFn(InitRowsShape)
    .Doc(R"doc(
Deterministic initial rows (n, dim) of int64 keys: a pure function of (seed, key, column).
)doc");

REGISTER_OP("Herald>GatherRows")
    .Input("storage: resource")
    .Input("slot_ids: int64")
    .Output("rows: float")
    .SetShapeFn(GatherRowsShape)
    .Doc("Copies storage rows (slots, width) at slot_ids into (n, width): rows to push or flush.");

REGISTER_OP("Herald>ScatterRows")
    .Input("storage: resource")
    .Input("slot_ids: int64")
    .Input("rows: float")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::NoOutputs)
    .Doc("Writes rows (n, width) into storage at distinct slot_ids: pulled rows into the cache.");

}  // namespace herald
