// cudaprobe: what the GPU host's CUDA allows rankmesh's CUDA backend (issue 14) to do.
// One check per subcommand; each prints "OK|FAIL|SKIP <check>: <detail>" lines and exits 0 on
// OK/SKIP, 1 on FAIL. scripts/gpu_probe.sh runs each under its own timeout. Children for the
// cross-process checks are this same program, fork+exec'd (posix_spawn of /proc/self/exe).
#include <cuda_runtime.h>
#include <fcntl.h>
#include <stdarg.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

extern char** environ;

static double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double wall_s() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static int report(const char* status, const char* check, const std::string& detail) {
  printf("%-4s %s: %s\n", status, check, detail.c_str());
  fflush(stdout);
  return strcmp(status, "FAIL") == 0 ? 1 : 0;
}
static std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
static std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
#define CK(check, call)                                                                          \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess)                                                                       \
      return report("FAIL", check, fmt("%s -> %s (%s)", #call, cudaGetErrorName(e_), cudaGetErrorString(e_))); \
  } while (0)

static constexpr size_t kMiB = size_t{1} << 20;

__global__ void spin_ns(uint64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < ns);
}
__global__ void fill_u32(uint32_t* p, size_t n, uint32_t v) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) p[i] = v;
}
__global__ void work(float* out, long iters) {
  float a = threadIdx.x * 1e-3f, b = 1.0001f, c = 1e-7f;
  for (long i = 0; i < iters; ++i) a = fmaf(a, b, c);
  if (a == 12345.f) out[0] = a;  // keep the loop
}

static std::string hex(const void* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) { uint8_t b = static_cast<const uint8_t*>(p)[i]; s += d[b >> 4]; s += d[b & 15]; }
  return s;
}
static void unhex(const char* s, void* p, size_t n) {
  auto v = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i < n; ++i) static_cast<uint8_t*>(p)[i] = uint8_t(v(s[2 * i]) << 4 | v(s[2 * i + 1]));
}
static pid_t spawn_self(std::vector<std::string> args) {
  static char self[4096];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  self[k > 0 ? k : 0] = 0;
  std::vector<char*> av{self};
  for (auto& a : args) av.push_back(a.data());
  av.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, self, nullptr, nullptr, av.data(), environ) != 0) return -1;
  return pid;
}
static int wait_code(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
static bool all_bytes(const std::vector<uint8_t>& v, uint8_t b, size_t n) {
  for (size_t i = 0; i < n; ++i) if (v[i] != b) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
static int check_info() {
  int drv = 0, rt = 0, n = 0;
  cudaError_t e = cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  report(e == cudaSuccess && drv > 0 ? "OK" : "FAIL", "cuda_versions", fmt("driver API %d.%d, runtime (static) %d.%d", drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10));
  CK("device_count", cudaGetDeviceCount(&n));
  report(n > 0 ? "OK" : "FAIL", "device_count", fmt("%d", n));
  if (n == 0) return 1;
  cudaDeviceProp p{};
  CK("device_props", cudaGetDeviceProperties(&p, 0));
  report("OK", "device_props",
         fmt("%s, CC %d.%d, %d SMs, %.1f GiB, unifiedAddressing %d, canMapHostMemory %d, asyncEngineCount %d, "
             "concurrentManagedAccess %d, pageableMemoryAccess %d, pci %04x:%02x:%02x",
             p.name, p.major, p.minor, p.multiProcessorCount, p.totalGlobalMem / double(1 << 30), p.unifiedAddressing,
             p.canMapHostMemory, p.asyncEngineCount, p.concurrentManagedAccess, p.pageableMemoryAccess, p.pciDomainID,
             p.pciBusID, p.pciDeviceID));
  auto attr = [](cudaDeviceAttr a) { int v = -1; if (cudaDeviceGetAttribute(&v, a, 0) != cudaSuccess) { cudaGetLastError(); v = -1; } return v; };
  int cm = attr(cudaDevAttrComputeMode);
  report("OK", "device_attrs",
         fmt("computeMode %d (0 default, 2 prohibited, 3 exclusive-process), ipcEventSupport %d, memoryPools %d, "
             "memoryPoolHandleTypes 0x%x (1 posix fd), hostRegister %d, gpuDirectRDMA %d, hostNumaId %d",
             cm, attr(cudaDevAttrIpcEventSupport), attr(cudaDevAttrMemoryPoolsSupported),
             attr(cudaDevAttrMemoryPoolSupportedHandleTypes), attr(cudaDevAttrHostRegisterSupported),
             attr(cudaDevAttrGPUDirectRDMASupported), attr(cudaDevAttrHostNumaId)));
  size_t fr = 0, tot = 0;
  CK("mem_info", cudaMemGetInfo(&fr, &tot));
  rlimit rl{};
  getrlimit(RLIMIT_MEMLOCK, &rl);
  return report("OK", "mem_info", fmt("free %.1f GiB of %.1f GiB; RLIMIT_MEMLOCK %s", fr / double(1 << 30), tot / double(1 << 30),
                                      rl.rlim_cur == RLIM_INFINITY ? "unlimited" : fmt("%llu KiB", (unsigned long long)rl.rlim_cur / 1024).c_str()));
}

// ---------------------------------------------------------------------------------------------
static int check_pinned() {
  int rc = 0;
  void* h = nullptr;
  double t0 = now_s();
  CK("pinned_mallochost_256mib", cudaMallocHost(&h, 256 * kMiB));
  double t1 = now_s();
  memset(h, 1, 256 * kMiB);
  CK("pinned_mallochost_256mib", cudaFreeHost(h));
  double t2 = now_s();
  rc |= report("OK", "pinned_mallochost_256mib", fmt("cudaMallocHost %.1f ms, cudaFreeHost %.1f ms", (t1 - t0) * 1e3, (t2 - t1) * 1e3));

  void* m = aligned_alloc(4096, 64 * kMiB);
  memset(m, 2, 64 * kMiB);
  t0 = now_s();
  cudaError_t e = cudaHostRegister(m, 64 * kMiB, cudaHostRegisterDefault);
  t1 = now_s();
  if (e == cudaSuccess) { cudaHostUnregister(m); rc |= report("OK", "hostregister_malloc_64mib", fmt("%.1f ms", (t1 - t0) * 1e3)); }
  else { cudaGetLastError(); rc |= report("FAIL", "hostregister_malloc_64mib", cudaGetErrorName(e)); }
  free(m);

  // pinning a shared-memory segment (memfd, as transports/shm makes them): staging straight from shm
  int fd = memfd_create("probe", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, 64 * kMiB) != 0) return rc | report("FAIL", "hostregister_memfd_64mib", "memfd");
  void* s = mmap(nullptr, 64 * kMiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  t0 = now_s();
  e = cudaHostRegister(s, 64 * kMiB, cudaHostRegisterPortable);
  t1 = now_s();
  if (e != cudaSuccess) { cudaGetLastError(); rc |= report("FAIL", "hostregister_memfd_64mib", cudaGetErrorName(e)); }
  else {
    void* d = nullptr;
    cudaMalloc(&d, 64 * kMiB);
    cudaEvent_t a, b;
    cudaEventCreate(&a); cudaEventCreate(&b);
    cudaMemcpy(d, s, 64 * kMiB, cudaMemcpyHostToDevice);
    cudaEventRecord(a);
    for (int i = 0; i < 5; ++i) cudaMemcpyAsync(d, s, 64 * kMiB, cudaMemcpyHostToDevice);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    rc |= report("OK", "hostregister_memfd_64mib", fmt("register %.1f ms; H2D from it %.1f GB/s", (t1 - t0) * 1e3, 5 * 64 * kMiB / (ms * 1e-3) / 1e9));
    cudaHostUnregister(s);
    cudaFree(d);
  }
  munmap(s, 64 * kMiB);
  close(fd);
  return rc;
}

// ---------------------------------------------------------------------------------------------
static float time_copy(void* dst, const void* src, size_t n, cudaMemcpyKind k, cudaStream_t s) {
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) cudaMemcpyAsync(dst, src, n, k, s);
  std::vector<float> t;
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(a, s);
    cudaMemcpyAsync(dst, src, n, k, s);
    cudaEventRecord(b, s);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    t.push_back(ms);
  }
  cudaEventDestroy(a); cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}
static int check_bw() {
  const size_t n = 64 * kMiB;
  void *h = nullptr, *d0 = nullptr, *d1 = nullptr;
  CK("bandwidth", cudaMallocHost(&h, n));
  CK("bandwidth", cudaMalloc(&d0, n));
  CK("bandwidth", cudaMalloc(&d1, n));
  memset(h, 3, n);
  void* pg = malloc(n);
  memset(pg, 4, n);
  cudaStream_t s;
  CK("bandwidth", cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  struct { const char* name; void* dst; const void* src; cudaMemcpyKind k; double mult; } cases[] = {
      {"h2d_pinned", d0, h, cudaMemcpyHostToDevice, 1}, {"d2h_pinned", h, d0, cudaMemcpyDeviceToHost, 1},
      {"d2d", d1, d0, cudaMemcpyDeviceToDevice, 1},       {"h2d_pageable", d0, pg, cudaMemcpyHostToDevice, 1},
      {"d2h_pageable", pg, d0, cudaMemcpyDeviceToHost, 1}};
  std::string line;
  for (auto& c : cases) {
    float ms = time_copy(c.dst, c.src, n, c.k, s);
    line += fmt("%s %.1f GB/s (%.3f ms); ", c.name, n / (ms * 1e-3) / 1e9, ms);
  }
  CK("bandwidth", cudaGetLastError());
  report("OK", "bandwidth_64mib", line + "median of 10, event-timed; d2d counts bytes once");
  // small-copy latency (what a per-frame header copy would cost)
  float ms = time_copy(d0, h, 4096, cudaMemcpyHostToDevice, s);
  float ms2 = time_copy(h, d0, 4096, cudaMemcpyDeviceToHost, s);
  return report("OK", "small_copy_4kib", fmt("h2d %.1f us, d2h %.1f us (event-timed)", ms * 1e3, ms2 * 1e3));
}

// ---------------------------------------------------------------------------------------------
struct Slot { std::atomic<double> at{0}; std::atomic<long> tid{0}; };
static void CUDART_CB host_cb(void* p) {
  auto* s = static_cast<Slot*>(p);
  s->tid.store(syscall(SYS_gettid));
  s->at.store(now_s());
}
static int check_hostfunc() {
  cudaStream_t s;
  CK("launch_host_func", cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<double> lat;
  long cbtid = 0;
  for (int i = 0; i < 200; ++i) {
    Slot slot;
    double t0 = now_s();
    CK("launch_host_func", cudaLaunchHostFunc(s, host_cb, &slot));
    while (slot.at.load() == 0) if (now_s() - t0 > 5) return report("FAIL", "launch_host_func", "callback did not run in 5 s");
    lat.push_back(slot.at.load() - t0);
    cbtid = slot.tid.load();
  }
  std::sort(lat.begin(), lat.end());
  report("OK", "launch_host_func_latency", fmt("idle stream, enqueue->callback median %.1f us, p99 %.1f us, max %.1f us; callback thread %s the caller",
                                               lat[100] * 1e6, lat[198] * 1e6, lat[199] * 1e6, cbtid == syscall(SYS_gettid) ? "IS" : "is not"));
  // ordering: a callback after a 100 ms kernel runs after it; enqueue returns at once
  Slot slot;
  double t0 = now_s();
  spin_ns<<<1, 1, 0, s>>>(100'000'000ull);
  CK("launch_host_func_order", cudaLaunchHostFunc(s, host_cb, &slot));
  double enq = now_s() - t0;
  while (slot.at.load() == 0) if (now_s() - t0 > 5) return report("FAIL", "launch_host_func_order", "callback did not run in 5 s");
  double after = slot.at.load() - t0;
  return report(after >= 0.099 && enq < 0.05 ? "OK" : "FAIL", "launch_host_func_order",
                fmt("enqueue took %.2f ms, callback %.1f ms after a 100 ms kernel was launched", enq * 1e3, after * 1e3));
}

// ---------------------------------------------------------------------------------------------
static int check_events() {
  cudaEvent_t e;
  CK("event_interprocess", cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventInterprocess));
  cudaIpcEventHandle_t h;
  CK("event_interprocess", cudaIpcGetEventHandle(&h, e));
  CK("event_interprocess", cudaEventRecord(e, 0));
  CK("event_interprocess", cudaEventSynchronize(e));
  cudaEventDestroy(e);
  report("OK", "event_interprocess", "cudaEventCreateWithFlags(DisableTiming|Interprocess) + cudaIpcGetEventHandle + record/sync");
  double t0 = now_s();
  std::vector<cudaEvent_t> ev(1000);
  for (auto& x : ev) CK("event_create_cost", cudaEventCreateWithFlags(&x, cudaEventDisableTiming));
  double t1 = now_s();
  for (auto& x : ev) cudaEventRecord(x, 0);
  double t2 = now_s();
  for (auto& x : ev) cudaEventQuery(x);
  double t3 = now_s();
  for (auto& x : ev) cudaEventDestroy(x);
  double t4 = now_s();
  return report("OK", "event_costs", fmt("per event: create %.2f us, record %.2f us, query %.2f us, destroy %.2f us",
                                         (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3));
}

// ---------------------------------------------------------------------------------------------
// Graph capture with a side stream (as graph_capture in #14 would), and what an uncapturable call says.
static int check_graph() {
  cudaStream_t main_s, side;
  cudaStreamCreateWithFlags(&main_s, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
  uint32_t* d = nullptr;
  CK("graph_capture", cudaMalloc(&d, 4 * kMiB));
  cudaEvent_t fork_e, join_e;
  cudaEventCreateWithFlags(&fork_e, cudaEventDisableTiming);
  cudaEventCreateWithFlags(&join_e, cudaEventDisableTiming);
  CK("graph_capture", cudaStreamBeginCapture(main_s, cudaStreamCaptureModeThreadLocal));
  cudaEventRecord(fork_e, main_s);
  cudaStreamWaitEvent(side, fork_e, 0);
  fill_u32<<<64, 256, 0, side>>>(d, kMiB, 0xfeedu);
  cudaEventRecord(join_e, side);
  cudaStreamWaitEvent(main_s, join_e, 0);
  void* bad = nullptr;
  cudaError_t illegal = cudaMalloc(&bad, 1024);  // an "unsafe" call during a thread-local capture
  if (illegal == cudaSuccess) cudaFree(bad);
  cudaError_t sync_err = cudaStreamSynchronize(main_s);  // not capturable
  cudaGraph_t g;
  cudaError_t end_err = cudaStreamEndCapture(main_s, &g);
  std::string note = fmt("cudaMalloc during thread-local capture -> %s; cudaStreamSynchronize on the capturing stream -> %s; EndCapture then -> %s",
                         cudaGetErrorName(illegal), cudaGetErrorName(sync_err), cudaGetErrorName(end_err));
  cudaGetLastError();
  // a clean capture, on fresh streams (the capture above was invalidated)
  cudaStreamCreateWithFlags(&main_s, cudaStreamNonBlocking);
  cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
  CK("graph_capture", cudaStreamBeginCapture(main_s, cudaStreamCaptureModeGlobal));
  cudaEventRecord(fork_e, main_s);
  cudaStreamWaitEvent(side, fork_e, 0);
  fill_u32<<<64, 256, 0, side>>>(d, kMiB, 0xfeedu);
  cudaEventRecord(join_e, side);
  cudaStreamWaitEvent(main_s, join_e, 0);
  CK("graph_capture", cudaStreamEndCapture(main_s, &g));
  cudaGraphExec_t x;
  CK("graph_capture", cudaGraphInstantiate(&x, g, 0));
  CK("graph_capture", cudaMemset(d, 0, 4 * kMiB));
  CK("graph_capture", cudaGraphLaunch(x, main_s));
  CK("graph_capture", cudaStreamSynchronize(main_s));
  std::vector<uint32_t> hv(kMiB);
  cudaMemcpy(hv.data(), d, 4 * kMiB, cudaMemcpyDeviceToHost);
  bool ok = std::all_of(hv.begin(), hv.end(), [](uint32_t v) { return v == 0xfeedu; });
  return report(ok ? "OK" : "FAIL", "graph_capture_side_stream", "fork/join side stream captured, replayed, bytes right. " + note);
}

// ---------------------------------------------------------------------------------------------
// Legacy CUDA IPC: parent exports an allocation and an interprocess event; the fork+exec'd child
// opens both, waits on the event on its own stream (the parent's stream is still busy), copies.
static int check_ipc() {
  const size_t n = 64 * kMiB;
  uint8_t* d = nullptr;
  CK("ipc", cudaMalloc(&d, n));
  CK("ipc", cudaMemset(d, 0xA1, n));
  CK("ipc", cudaDeviceSynchronize());
  cudaEvent_t ev;
  CK("ipc", cudaEventCreateWithFlags(&ev, cudaEventDisableTiming | cudaEventInterprocess));
  cudaIpcMemHandle_t mh;
  cudaIpcEventHandle_t eh;
  double t0 = now_s();
  CK("ipc_get_mem_handle", cudaIpcGetMemHandle(&mh, d));
  double t1 = now_s();
  CK("ipc_get_event_handle", cudaIpcGetEventHandle(&eh, ev));
  report("OK", "ipc_get_handles", fmt("cudaIpcGetMemHandle %.1f us, cudaIpcGetEventHandle ok", (t1 - t0) * 1e6));
  int ready[2], go[2];
  if (pipe(ready) || pipe(go)) return report("FAIL", "ipc", "pipe");
  pid_t c = spawn_self({"ipc-child", hex(&mh, sizeof mh), hex(&eh, sizeof eh), std::to_string(ready[1]), std::to_string(go[0])});
  if (c < 0) return report("FAIL", "ipc", "posix_spawn");
  close(ready[1]); close(go[0]);
  char b = 0;
  if (read(ready[0], &b, 1) != 1) { int code = wait_code(c); return report("FAIL", "ipc_open_in_child", fmt("child exited %d before opening the handles", code)); }
  // The child has both handles open. Make our stream busy for 400 ms, then write 0xB2, record.
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  spin_ns<<<1, 1, 0, s>>>(400'000'000ull);
  fill_u32<<<264, 512, 0, s>>>(reinterpret_cast<uint32_t*>(d), n / 4, 0xB2B2B2B2u);
  CK("ipc", cudaEventRecord(ev, s));
  (void)!write(go[1], "g", 1);
  int code = wait_code(c);
  close(ready[0]); close(go[1]);
  std::vector<uint8_t> hv(kMiB);
  CK("ipc", cudaMemcpy(hv.data(), d, kMiB, cudaMemcpyDeviceToHost));
  bool back = all_bytes(hv, 0xC3, kMiB);
  report(code == 0 ? "OK" : "FAIL", "ipc_child", fmt("child exit %d", code));
  return report(code == 0 && back ? "OK" : "FAIL", "ipc_child_write_visible", back ? "the child's 0xC3 is in the parent's allocation" : "parent does not see the child's write");
}
static int ipc_child(const char* mh_hex, const char* eh_hex, int ready_fd, int go_fd) {
  cudaIpcMemHandle_t mh;
  cudaIpcEventHandle_t eh;
  unhex(mh_hex, &mh, sizeof mh);
  unhex(eh_hex, &eh, sizeof eh);
  const size_t n = 64 * kMiB;
  double t0 = now_s();
  CK("ipc_open_in_child", cudaSetDevice(0));
  CK("ipc_open_in_child", cudaFree(nullptr));
  double t1 = now_s();
  void* p = nullptr;
  CK("ipc_open_mem_handle", cudaIpcOpenMemHandle(&p, mh, cudaIpcMemLazyEnablePeerAccess));
  double t2 = now_s();
  cudaEvent_t ev;
  CK("ipc_open_event_handle", cudaIpcOpenEventHandle(&ev, eh));
  report("OK", "ipc_open_in_child", fmt("context init %.0f ms, cudaIpcOpenMemHandle %.2f ms, cudaIpcOpenEventHandle ok", (t1 - t0) * 1e3, (t2 - t1) * 1e3));
  uint8_t* mine = nullptr;
  CK("ipc_child", cudaMalloc(&mine, n));
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  (void)!write(ready_fd, "r", 1);
  char b;
  if (read(go_fd, &b, 1) != 1) return report("FAIL", "ipc_event_wait", "no go");
  double tg = now_s();
  CK("ipc_event_wait", cudaStreamWaitEvent(s, ev, 0));
  CK("ipc_event_wait", cudaMemcpyAsync(mine, p, n, cudaMemcpyDeviceToDevice, s));
  std::vector<uint8_t> hv(n);
  CK("ipc_event_wait", cudaMemcpyAsync(hv.data(), mine, n, cudaMemcpyDeviceToHost, s));
  CK("ipc_event_wait", cudaStreamSynchronize(s));
  double waited = now_s() - tg;
  bool b2 = all_bytes(hv, 0xB2, n), a1 = hv[0] == 0xA1;
  int rc = report(b2 ? "OK" : "FAIL", "ipc_event_wait",
                  fmt("child stream waited on the parent's IPC event: %s; copy done %.0f ms after go (parent's kernel ran 400 ms)",
                      b2 ? "all 64 MiB are the parent's later 0xB2" : a1 ? "saw the OLD 0xA1 (wait did not hold)" : "bytes wrong", waited * 1e3));
  // D2D bandwidth through the IPC mapping
  cudaEvent_t x, y;
  cudaEventCreate(&x); cudaEventCreate(&y);
  cudaMemcpyAsync(mine, p, n, cudaMemcpyDeviceToDevice, s);
  cudaEventRecord(x, s);
  for (int i = 0; i < 10; ++i) cudaMemcpyAsync(mine, p, n, cudaMemcpyDeviceToDevice, s);
  cudaEventRecord(y, s);
  cudaEventSynchronize(y);
  float ms = 0;
  cudaEventElapsedTime(&ms, x, y);
  rc |= report("OK", "ipc_d2d_bandwidth", fmt("%.1f GB/s copying 64 MiB from the peer's allocation (bytes once)", 10 * n / (ms * 1e-3) / 1e9));
  CK("ipc_child_write", cudaMemsetAsync(p, 0xC3, kMiB, s));
  CK("ipc_child_write", cudaStreamSynchronize(s));
  CK("ipc_close", cudaIpcCloseMemHandle(p));
  return rc;
}

// ---------------------------------------------------------------------------------------------
// Stream-ordered pool IPC (cudaMemPool + POSIX fd): the alternative to legacy IPC.
static int check_pool_ipc() {
  int types = 0;
  cudaDeviceGetAttribute(&types, cudaDevAttrMemoryPoolSupportedHandleTypes, 0);
  if (!(types & cudaMemHandleTypePosixFileDescriptor)) return report("SKIP", "mempool_ipc", fmt("posix fd handles not supported (0x%x)", types));
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.handleTypes = cudaMemHandleTypePosixFileDescriptor;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = 0;
  cudaMemPool_t pool;
  CK("mempool_ipc", cudaMemPoolCreate(&pool, &props));
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  void* p = nullptr;
  const size_t n = 64 * kMiB;
  CK("mempool_ipc", cudaMallocFromPoolAsync(&p, n, pool, s));
  CK("mempool_ipc", cudaMemsetAsync(p, 0xD4, n, s));
  CK("mempool_ipc", cudaStreamSynchronize(s));
  int fd = -1;
  CK("mempool_ipc_export", cudaMemPoolExportToShareableHandle(&fd, pool, cudaMemHandleTypePosixFileDescriptor, 0));
  cudaMemPoolPtrExportData data;
  CK("mempool_ipc_export", cudaMemPoolExportPointer(&data, p));
  int flags = fcntl(fd, F_GETFD);
  fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  pid_t c = spawn_self({"pool-child", std::to_string(fd), hex(&data, sizeof data)});
  int code = c < 0 ? -1 : wait_code(c);
  close(fd);
  std::vector<uint8_t> hv(kMiB);
  CK("mempool_ipc", cudaMemcpy(hv.data(), p, kMiB, cudaMemcpyDeviceToHost));
  bool back = all_bytes(hv, 0xE5, kMiB);
  return report(code == 0 && back ? "OK" : "FAIL", "mempool_ipc", fmt("child exit %d; child's write %s", code, back ? "visible" : "NOT visible"));
}
static int pool_child(int fd, const char* data_hex) {
  cudaMemPoolPtrExportData data;
  unhex(data_hex, &data, sizeof data);
  cudaMemPool_t pool;
  CK("mempool_ipc_import", cudaMemPoolImportFromShareableHandle(&pool, (void*)(uintptr_t)fd, cudaMemHandleTypePosixFileDescriptor, 0));
  cudaMemAccessDesc desc{};
  desc.location.type = cudaMemLocationTypeDevice;
  desc.location.id = 0;
  desc.flags = cudaMemAccessFlagsProtReadWrite;
  CK("mempool_ipc_import", cudaMemPoolSetAccess(pool, &desc, 1));
  void* p = nullptr;
  CK("mempool_ipc_import", cudaMemPoolImportPointer(&p, pool, &data));
  std::vector<uint8_t> hv(64 * kMiB);
  CK("mempool_ipc_import", cudaMemcpy(hv.data(), p, hv.size(), cudaMemcpyDeviceToHost));
  if (!all_bytes(hv, 0xD4, hv.size())) return report("FAIL", "mempool_ipc_import", "bytes wrong");
  CK("mempool_ipc_import", cudaMemset(p, 0xE5, kMiB));
  CK("mempool_ipc_import", cudaDeviceSynchronize());
  CK("mempool_ipc_import", cudaFree(p));
  return report("OK", "mempool_ipc_import", "imported the pool and pointer, read 64 MiB, wrote 1 MiB");
}

// ---------------------------------------------------------------------------------------------
// Two processes on the GPU at once.
static int busy(long iters, int report_fd) {
  double t0 = now_s();
  void* big = nullptr;
  CK("busy", cudaMalloc(&big, size_t(1) << 30));
  double init = now_s() - t0;
  float* out = (float*)big;
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  int grid = p.multiProcessorCount * 8;
  if (iters <= 0) {  // calibrate for about 400 ms
    iters = 1 << 16;
    for (;;) {
      double a = now_s();
      work<<<grid, 256>>>(out, iters);
      CK("busy", cudaDeviceSynchronize());
      double dt = now_s() - a;
      if (dt > 0.05) { iters = long(iters * (0.4 / dt)); break; }
      iters *= 4;
    }
  }
  double ws = wall_s();
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  cudaEventRecord(a);
  work<<<grid, 256>>>(out, iters);
  cudaEventRecord(b);
  CK("busy", cudaEventSynchronize(b));
  double we = wall_s();
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  std::string line = fmt("%ld %.6f %.6f %.1f %.0f\n", iters, ws, we, ms, init * 1e3);
  (void)!write(report_fd, line.data(), line.size());
  return 0;
}
static int check_concurrent() {
  auto run = [](int k, long iters, std::vector<std::string>& lines, std::vector<int>& codes) {
    int pf[2];
    if (pipe(pf)) return;
    std::vector<pid_t> pids;
    for (int i = 0; i < k; ++i) pids.push_back(spawn_self({"busy", std::to_string(iters), std::to_string(pf[1])}));
    close(pf[1]);
    std::string all;
    char buf[512];
    ssize_t r;
    while ((r = read(pf[0], buf, sizeof buf)) > 0) all.append(buf, r);
    close(pf[0]);
    for (pid_t p : pids) codes.push_back(p < 0 ? -1 : wait_code(p));
    size_t pos = 0;
    while (pos < all.size()) { size_t e = all.find('\n', pos); lines.push_back(all.substr(pos, e - pos)); pos = e + 1; }
  };
  std::vector<std::string> solo;
  std::vector<int> codes;
  run(1, 0, solo, codes);
  if (solo.size() != 1 || codes[0] != 0) return report("FAIL", "two_processes", fmt("solo run failed (exit %d)", codes.empty() ? -1 : codes[0]));
  long iters; double ws, we; float ms; double init;
  sscanf(solo[0].c_str(), "%ld %lf %lf %f %lf", &iters, &ws, &we, &ms, &init);
  report("OK", "one_process_kernel", fmt("calibrated kernel (all SMs) %.0f ms alone; context+1 GiB cudaMalloc %.0f ms", ms, init));
  std::vector<std::string> two;
  codes.clear();
  run(2, iters, two, codes);
  if (two.size() != 2 || codes[0] != 0 || codes[1] != 0)
    return report("FAIL", "two_processes", fmt("%zu reports, exits %d %d", two.size(), codes.size() > 0 ? codes[0] : -1, codes.size() > 1 ? codes[1] : -1));
  double s0, e0, s1, e1; float m0, m1; double i0, i1; long it;
  sscanf(two[0].c_str(), "%ld %lf %lf %f %lf", &it, &s0, &e0, &m0, &i0);
  sscanf(two[1].c_str(), "%ld %lf %lf %f %lf", &it, &s1, &e1, &m1, &i1);
  double overlap = std::min(e0, e1) - std::max(s0, s1);
  return report("OK", "two_processes",
                fmt("both ran; kernels %.0f / %.0f ms (alone %.0f), wall overlap %.0f ms, span %.0f ms => %s",
                    m0, m1, ms, overlap * 1e3, (std::max(e0, e1) - std::min(s0, s1)) * 1e3,
                    overlap > 0.05 ? "time-sliced / shared (no exclusive mode)" : "serialized"));
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: cudaprobe info|pinned|bw|hostfunc|events|graph|ipc|poolipc|concurrent\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  std::string w = argv[1];
  if (w == "info") return check_info();
  if (w == "pinned") return check_pinned();
  if (w == "bw") return check_bw();
  if (w == "hostfunc") return check_hostfunc();
  if (w == "events") return check_events();
  if (w == "graph") return check_graph();
  if (w == "ipc") return check_ipc();
  if (w == "ipc-child" && argc == 6) return ipc_child(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
  if (w == "poolipc") return check_pool_ipc();
  if (w == "pool-child" && argc == 4) return pool_child(atoi(argv[2]), argv[3]);
  if (w == "concurrent") return check_concurrent();
  if (w == "busy" && argc == 4) return busy(atol(argv[2]), atoi(argv[3]));
  fprintf(stderr, "unknown check %s\n", w.c_str());
  return 2;
}
