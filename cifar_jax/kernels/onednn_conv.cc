// NHWC / HWIO 2-D convolution (forward, input gradient, kernel gradient) through oneDNN,
// as an XLA FFI custom call for jax on CPU, in float32 or bfloat16.
//
// One handler, three modes (attribute "mode"):
//   0 forward:         a = x  (N,H,W,Ci), b = w  (KH,KW,Ci,Co) -> out = y  (N,OH,OW,Co)
//   1 input gradient:  a = dy (N,OH,OW,Co), b = w            -> out = dx (N,H,W,Ci)
//   2 kernel gradient: a = x,  b = dy                         -> out = dw (KH,KW,Ci,Co)
// Activations stay NHWC (oneDNN reads and writes them in place); only the small kernel is
// reordered to and from oneDNN's blocked layout. Primitives are cached per shape and dtype.
//
// dtypes: a and b are both F32 or both BF16. Modes 0 and 1 write the operands' dtype
// (bf16: oneDNN accumulates in f32 and rounds once); mode 2 writes F32 or BF16 (oneDNN
// accumulates bf16 kernel gradients in f32 diff_weights; jax asks for F32 and rounds).
// OnednnBf16Support() says whether this CPU runs bf16 convs in hardware (AMX or
// AVX512_BF16) rather than emulated or in reference code.
#include <cstdint>
#include <cstring>
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
  auto key(int64_t mode, dt act, dt out) const {
    return std::vector<int64_t>{mode, n,  h,  w,  ci, kh, kw, co, oh,
                                ow,   sh, sw, pt, pb, pl, pr, static_cast<int64_t>(act),
                                static_cast<int64_t>(out)};
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

// act: the dtype of the activations and of the kernel in modes 0 and 1 (f32 or bf16);
// out_wei: the kernel gradient's dtype in mode 2 (ignored otherwise).
Plan* GetPlan(const Geometry& g, int64_t mode, dt act, dt out_wei) {
  auto& cache = Cache();
  auto key = g.key(mode, act, mode == 2 ? out_wei : act);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  auto& eng = Engine();
  dnnl::memory::dims src_dims = {g.n, g.ci, g.h, g.w};
  dnnl::memory::dims wei_dims = {g.co, g.ci, g.kh, g.kw};
  dnnl::memory::dims dst_dims = {g.n, g.co, g.oh, g.ow};
  dnnl::memory::dims strides = {g.sh, g.sw};
  dnnl::memory::dims pad_l = {g.pt, g.pl};
  dnnl::memory::dims pad_r = {g.pb, g.pr};
  const dt wei_dt = mode == 2 ? out_wei : act;
  dnnl::memory::desc src_md(src_dims, act, tag::nhwc);
  dnnl::memory::desc dst_md(dst_dims, act, tag::nhwc);
  dnnl::memory::desc fwd_wei(wei_dims, act, tag::any);  // the forward hint's kernel
  dnnl::memory::desc any_wei(wei_dims, wei_dt, tag::any);
  dnnl::memory::desc user_wei(wei_dims, wei_dt, tag::hwio);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  auto fwd_pd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src_md,
      fwd_wei, dst_md, strides, pad_l, pad_r, attr);

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

// The oneDNN dtype of an F32 or BF16 buffer; false for any other.
bool ToDnnl(ffi::DataType type, dt* out) {
  if (type == ffi::DataType::F32) {
    *out = dt::f32;
  } else if (type == ffi::DataType::BF16) {
    *out = dt::bf16;
  } else {
    return false;
  }
  return true;
}

ffi::Error ConvImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                    int64_t mode, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                    int64_t pr) {
  if (a.dimensions().size() != 4 || b.dimensions().size() != 4 ||
      out->dimensions().size() != 4 || mode < 0 || mode > 2) {
    return ffi::Error::InvalidArgument("onednn_conv: expects rank-4 operands, mode 0-2");
  }
  dt act, b_dt, out_dt;
  if (!ToDnnl(a.element_type(), &act) || !ToDnnl(b.element_type(), &b_dt) ||
      !ToDnnl(out->element_type(), &out_dt) || b_dt != act || (mode != 2 && out_dt != act)) {
    return ffi::Error::InvalidArgument(
        "onednn_conv: operands must be both F32 or both BF16, the result of modes 0 and 1 "
        "of the same dtype, of mode 2 F32 or the operands' dtype");
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
    Plan* plan = GetPlan(g, mode, act, out_dt);
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

// Whether the forward, input- and kernel-gradient primitives of a bf16 conv are oneDNN's
// jitted kernels (not "ref" code), and the ISA is one with bf16 arithmetic in hardware.
bool Bf16Supported(std::string* info) {
  using isa_t = dnnl::cpu_isa;
  const isa_t isa = dnnl::get_effective_cpu_isa();
  const std::map<isa_t, const char*> bf16_isas = {
      {isa_t::avx512_core_bf16, "avx512_core_bf16"},
      {isa_t::avx512_core_fp16, "avx512_core_fp16"},
      {isa_t::avx512_core_amx, "avx512_core_amx"},
      {isa_t::avx512_core_amx_fp16, "avx512_core_amx_fp16"},
  };
  auto found = bf16_isas.find(isa);
  if (found == bf16_isas.end()) {
    *info = "oneDNN's CPU ISA here has no bf16 arithmetic (dnnl_cpu_isa " +
            std::to_string(static_cast<int>(isa)) + ")";
    return false;
  }
  *info = std::string("ISA ") + found->second;
  auto& eng = Engine();
  dnnl::memory::desc src({64, 64, 8, 8}, dt::bf16, tag::nhwc);
  dnnl::memory::desc wei({64, 64, 3, 3}, dt::bf16, tag::any);
  dnnl::memory::desc dwei({64, 64, 3, 3}, dt::f32, tag::any);
  dnnl::memory::dims strides = {1, 1}, pad = {1, 1};
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src, wei,
      src, strides, pad, pad);
  auto bwd_data = dnnl::convolution_backward_data::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src, wei, src, strides, pad, pad, fwd);
  auto bwd_weights = dnnl::convolution_backward_weights::primitive_desc(
      eng, dnnl::algorithm::convolution_direct, src, dwei, src, strides, pad, pad, fwd);
  bool jitted = true;
  for (const char* impl :
       {fwd.impl_info_str(), bwd_data.impl_info_str(), bwd_weights.impl_info_str()}) {
    *info += std::string("; ") + impl;
    jitted = jitted && std::strncmp(impl, "ref", 3) != 0;
  }
  return jitted;
}

}  // namespace

// 1 if bf16 convs run on bf16 hardware here, else 0; writes what was found (the ISA,
// the implementations picked) to info (NUL-terminated, at most size bytes).
extern "C" int OnednnBf16Support(char* info, int size) {
  std::string found;
  bool ok = false;
  try {
    ok = Bf16Supported(&found);
  } catch (const dnnl::error& e) {
    found += std::string("; ") + e.what();
  }
  if (size > 0) {
    std::strncpy(info, found.c_str(), size - 1);
    info[size - 1] = '\0';
  }
  return ok ? 1 : 0;
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("mode")
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pt")
                                  .Attr<int64_t>("pb")
                                  .Attr<int64_t>("pl")
                                  .Attr<int64_t>("pr"));
