// NHWC / HWIO float32 2-D convolution (forward, input gradient, kernel gradient) through
// oneDNN, as an XLA FFI custom call for jax on CPU.
//
// One handler, three modes (attribute "mode"):
//   0 forward:         a = x  (N,H,W,Ci), b = w  (KH,KW,Ci,Co) -> out = y  (N,OH,OW,Co)
//   1 input gradient:  a = dy (N,OH,OW,Co), b = w            -> out = dx (N,H,W,Ci)
//   2 kernel gradient: a = x,  b = dy                         -> out = dw (KH,KW,Ci,Co)
// Activations stay NHWC (oneDNN reads and writes them in place); only the small kernel is
// reordered to and from oneDNN's blocked layout. Primitives are cached per shape.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

namespace {

struct Geometry {
  int64_t n, h, w, ci, kh, kw, co, oh, ow, sh, sw, pt, pb, pl, pr;
  auto key(int64_t mode) const {
    return std::vector<int64_t>{mode, n, h, w, ci, kh, kw, co, oh, ow, sh, sw, pt, pb, pl, pr};
  }
};

struct Plan {
  dnnl::primitive conv;
  dnnl::memory::desc act_in_md, act_out_md;  // NHWC activations
  dnnl::memory::desc wei_md;                 // oneDNN's chosen kernel layout
  dnnl::memory::desc user_wei_md;            // HWIO
  bool reorder_wei = false;
  dnnl::reorder wei_reorder;                  // HWIO -> wei_md (modes 0, 1) or back (mode 2)
  std::unique_ptr<dnnl::memory> wei_buf;     // kernel in oneDNN's layout
  dnnl::memory::desc scratch_md;
  std::unique_ptr<dnnl::memory> scratch;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One conv at a time: oneDNN already spreads each over every core, and a plan's scratch
// and kernel buffers must not be shared by two concurrent calls.
std::mutex& Lock() {
  static std::mutex lock;
  return lock;
}

std::map<std::vector<int64_t>, std::unique_ptr<Plan>>& Cache() {
  static std::map<std::vector<int64_t>, std::unique_ptr<Plan>> cache;
  return cache;
}

Plan* GetPlan(const Geometry& g, int64_t mode) {
  auto& cache = Cache();
  auto key = g.key(mode);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  auto& eng = Engine();
  dnnl::memory::dims src_dims = {g.n, g.ci, g.h, g.w};
  dnnl::memory::dims wei_dims = {g.co, g.ci, g.kh, g.kw};
  dnnl::memory::dims dst_dims = {g.n, g.co, g.oh, g.ow};
  dnnl::memory::dims strides = {g.sh, g.sw};
  dnnl::memory::dims pad_l = {g.pt, g.pl};
  dnnl::memory::dims pad_r = {g.pb, g.pr};
  dnnl::memory::desc src_md(src_dims, dt::f32, tag::nhwc);
  dnnl::memory::desc dst_md(dst_dims, dt::f32, tag::nhwc);
  dnnl::memory::desc any_wei(wei_dims, dt::f32, tag::any);
  dnnl::memory::desc user_wei(wei_dims, dt::f32, tag::hwio);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_md,
      any_wei, dst_md, strides, pad_l, pad_r, attr);

  auto plan = std::make_unique<Plan>();
  plan->user_wei_md = user_wei;
  if (mode == 0) {
    plan->conv = dnnl::convolution_forward(fwd_pd);
    plan->act_in_md = src_md;
    plan->act_out_md = dst_md;
    plan->wei_md = fwd_pd.weights_desc();
    plan->scratch_md = fwd_pd.scratchpad_desc();
  } else if (mode == 1) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src_md, any_wei, dst_md, strides, pad_l,
        pad_r, fwd_pd, attr);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->act_in_md = dst_md;
    plan->act_out_md = src_md;
    plan->wei_md = pd.weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, src_md, any_wei, dst_md, strides, pad_l,
        pad_r, fwd_pd, attr);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->act_in_md = src_md;
    plan->act_out_md = dst_md;
    plan->wei_md = pd.diff_weights_desc();
    plan->scratch_md = pd.scratchpad_desc();
  }
  plan->reorder_wei = plan->wei_md != user_wei;
  if (plan->reorder_wei) {
    plan->wei_buf = std::make_unique<dnnl::memory>(plan->wei_md, eng);
    plan->wei_reorder = mode == 2 ? dnnl::reorder(dnnl::reorder::primitive_desc(
                                        eng, plan->wei_md, eng, user_wei))
                                  : dnnl::reorder(dnnl::reorder::primitive_desc(
                                        eng, user_wei, eng, plan->wei_md));
  }
  plan->scratch = std::make_unique<dnnl::memory>(plan->scratch_md, eng);
  Plan* raw = plan.get();
  cache.emplace(std::move(key), std::move(plan));
  return raw;
}

ffi::Error ConvImpl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                    ffi::ResultBuffer<ffi::F32> out, int64_t mode, int64_t sh, int64_t sw,
                    int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (a.dimensions().size() != 4 || b.dimensions().size() != 4 ||
      out->dimensions().size() != 4 || mode < 0 || mode > 2) {
    return ffi::Error::InvalidArgument("onednn_conv: expects rank-4 operands, mode 0-2");
  }
  auto ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  Geometry g;
  if (mode == 0) {  // x, w -> y
    g = {ad[0], ad[1], ad[2], ad[3], bd[0], bd[1], bd[3], od[1], od[2], sh, sw, pt, pb, pl, pr};
  } else if (mode == 1) {  // dy, w -> dx
    g = {od[0], od[1], od[2], od[3], bd[0], bd[1], bd[3], ad[1], ad[2], sh, sw, pt, pb, pl, pr};
  } else {  // x, dy -> dw
    g = {ad[0], ad[1], ad[2], ad[3], od[0], od[1], od[3], bd[1], bd[2], sh, sw, pt, pb, pl, pr};
  }
  try {
    std::lock_guard<std::mutex> guard(Lock());
    Plan* plan = GetPlan(g, mode);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    void* a_ptr = a.untyped_data();
    void* b_ptr = b.untyped_data();
    void* o_ptr = out->untyped_data();
    std::unordered_map<int, dnnl::memory> args;
    args.insert({DNNL_ARG_SCRATCHPAD, *plan->scratch});
    if (mode == 0 || mode == 1) {
      dnnl::memory user_w(plan->user_wei_md, eng, b_ptr);
      dnnl::memory w = user_w;
      if (plan->reorder_wei) {
        plan->wei_reorder.execute(stream, user_w, *plan->wei_buf);
        w = *plan->wei_buf;
      }
      dnnl::memory in(plan->act_in_md, eng, a_ptr);
      dnnl::memory o(plan->act_out_md, eng, o_ptr);
      if (mode == 0) {
        args.insert({DNNL_ARG_SRC, in});
        args.insert({DNNL_ARG_WEIGHTS, w});
        args.insert({DNNL_ARG_DST, o});
      } else {
        args.insert({DNNL_ARG_DIFF_DST, in});
        args.insert({DNNL_ARG_WEIGHTS, w});
        args.insert({DNNL_ARG_DIFF_SRC, o});
      }
      plan->conv.execute(stream, args);
    } else {
      dnnl::memory x(plan->act_in_md, eng, a_ptr);
      dnnl::memory dy(plan->act_out_md, eng, b_ptr);
      dnnl::memory user_dw(plan->user_wei_md, eng, o_ptr);
      dnnl::memory dw = plan->reorder_wei ? *plan->wei_buf : user_dw;
      args.insert({DNNL_ARG_SRC, x});
      args.insert({DNNL_ARG_DIFF_DST, dy});
      args.insert({DNNL_ARG_DIFF_WEIGHTS, dw});
      plan->conv.execute(stream, args);
      if (plan->reorder_wei) plan->wei_reorder.execute(stream, *plan->wei_buf, user_dw);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pt")
                                  .Attr<int64_t>("pb")
                                  .Attr<int64_t>("pl")
                                  .Attr<int64_t>("pr"));
