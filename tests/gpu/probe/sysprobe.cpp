// sysprobe: what the host's kernel allows the shm/pidfd parts of rankmesh to do.
// One check per subcommand; each prints "OK|FAIL|SKIP <check>: <detail>" lines and exits 0 on OK/SKIP,
// 1 on FAIL. scripts/gpu_probe.sh runs each under its own timeout. Built statically (no glibc needs).
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/un.h>

#include <atomic>
#include <cstdint>
#include <string>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 2U
#endif

static double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int report(const char* status, const char* check, const std::string& detail) {
  printf("%-4s %s: %s\n", status, check, detail.c_str());
  fflush(stdout);
  return strcmp(status, "FAIL") == 0 ? 1 : 0;
}
static std::string err(const char* what) { return std::string(what) + ": " + strerror(errno); }

static constexpr size_t kGiB = size_t{1} << 30;

// /dev/shm: size, then shm_open + ftruncate(1 GiB) + touch every page.
static int check_devshm() {
  struct statvfs vfs {};
  if (statvfs("/dev/shm", &vfs) != 0) report("FAIL", "devshm_size", err("statvfs /dev/shm"));
  else {
    char buf[160];
    snprintf(buf, sizeof buf, "total %.1f MiB, free %.1f MiB",
             double(vfs.f_blocks) * vfs.f_frsize / 1048576.0, double(vfs.f_bavail) * vfs.f_frsize / 1048576.0);
    report("OK", "devshm_size", buf);
  }
  char name[64];
  snprintf(name, sizeof name, "/rankmesh-probe-%d", getpid());
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) return report("FAIL", "devshm_1gib", err("shm_open"));
  shm_unlink(name);
  double t0 = now_s();
  if (ftruncate(fd, kGiB) != 0) { int e = errno; close(fd); errno = e; return report("FAIL", "devshm_1gib", err("ftruncate 1 GiB")); }
  void* p = mmap(nullptr, kGiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) { close(fd); return report("FAIL", "devshm_1gib", err("mmap")); }
  // A too-small tmpfs answers a touch with SIGBUS; catch it through a child.
  pid_t c = fork();
  if (c == 0) {
    for (size_t i = 0; i < kGiB; i += 4096) static_cast<volatile char*>(p)[i] = 1;
    _exit(0);
  }
  int st = 0;
  waitpid(c, &st, 0);
  double dt = now_s() - t0;
  munmap(p, kGiB);
  close(fd);
  char buf[160];
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
    snprintf(buf, sizeof buf, "shm_open+ftruncate+touch 1 GiB in %.3f s", dt);
    return report("OK", "devshm_1gib", buf);
  }
  snprintf(buf, sizeof buf, "touching 1 GiB killed the toucher (signal %d)", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
  return report("FAIL", "devshm_1gib", buf);
}

// memfd the way shm_segment.cpp makes one: sealed, 0600, MAP_POPULATE; then an exec'd sibling-like
// process opens /proc/<pid>/fd/<fd>, maps it, checks the bytes, and wakes us through a shared futex.
static int check_memfd(const char* self) {
  const size_t bytes = kGiB;
  double t0 = now_s();
  int fd = memfd_create("rankmesh-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return report("FAIL", "memfd_create", err("memfd_create"));
  if (fchmod(fd, 0600) != 0 || ftruncate(fd, bytes) != 0)
    return report("FAIL", "memfd_create", err("fchmod/ftruncate 1 GiB"));
  bool sealed = fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0;
  int seal_errno = errno;
  auto* base = static_cast<uint8_t*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0));
  if (base == MAP_FAILED) return report("FAIL", "memfd_create", err("mmap MAP_POPULATE 1 GiB"));
  double t_map = now_s() - t0;
  for (size_t i = 0; i < bytes; i += 4096) base[i] = uint8_t(i >> 12);
  char buf[256];
  snprintf(buf, sizeof buf, "1 GiB memfd, fchmod+ftruncate+mmap(MAP_POPULATE) %.3f s; seals %s", t_map,
           sealed ? "ok" : strerror(seal_errno));
  report("OK", "memfd_create", buf);
  if (!sealed) report("FAIL", "memfd_seals", strerror(seal_errno));

  auto* word = reinterpret_cast<uint32_t*>(base);  // futex word at offset 0 (page 0 holds 0 already)
  *word = 0;
  char path[96];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", getpid(), fd);
  pid_t c = fork();
  if (c == 0) {
    execl(self, self, "memfd-peer", path, (char*)nullptr);
    _exit(127);
  }
  // wait on the shared futex (non-private: it crosses processes) until the peer sets it to 1
  double tw = now_s();
  while (std::atomic_ref<uint32_t>(*word).load() == 0 && now_s() - tw < 10) {
    timespec ts{0, 200 * 1000 * 1000};
    syscall(SYS_futex, word, FUTEX_WAIT, 0, &ts, nullptr, 0);
  }
  uint32_t got = std::atomic_ref<uint32_t>(*word).load();
  int st = 0;
  waitpid(c, &st, 0);
  int rc = 0;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == 1)
    rc |= report("OK", "memfd_proc_open_futex", "exec'd peer opened /proc/<pid>/fd/<fd>, saw the bytes, futex-woke us");
  else {
    snprintf(buf, sizeof buf, "peer exit %d, futex word %u", WIFEXITED(st) ? WEXITSTATUS(st) : -1, got);
    rc |= report("FAIL", "memfd_proc_open_futex", buf);
  }
  munmap(base, bytes);
  close(fd);
  return rc;
}

static int memfd_peer(const char* path) {
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) { fprintf(stderr, "peer: open %s: %s\n", path, strerror(errno)); return 2; }
  struct stat st {};
  fstat(fd, &st);
  auto* base = static_cast<uint8_t*>(mmap(nullptr, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (base == MAP_FAILED) { fprintf(stderr, "peer: mmap: %s\n", strerror(errno)); return 3; }
  for (size_t i = 4096; i < size_t(st.st_size); i += 4096)
    if (base[i] != uint8_t(i >> 12)) { fprintf(stderr, "peer: byte mismatch at %zu\n", i); return 4; }
  auto* word = reinterpret_cast<uint32_t*>(base);
  std::atomic_ref<uint32_t>(*word).store(1);
  syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  return 0;
}

// pidfd_open on a child, poll() for its exit (how rankmesh watches a peer).
static int check_pidfd() {
  pid_t c = fork();
  if (c == 0) { usleep(200 * 1000); _exit(7); }
  int pfd = int(syscall(SYS_pidfd_open, c, 0));
  if (pfd < 0) {
    int e = errno;
    waitpid(c, nullptr, 0);
    errno = e;
    return report("FAIL", "pidfd_open", err("pidfd_open"));
  }
  pollfd p{pfd, POLLIN, 0};
  double t0 = now_s();
  int n = poll(&p, 1, 5000);
  double dt = now_s() - t0;
  int st = 0;
  waitpid(c, &st, 0);
  close(pfd);
  char buf[128];
  snprintf(buf, sizeof buf, "poll readable after %.3f s (child sleeps 0.2 s), revents 0x%x", dt, p.revents);
  return report(n == 1 && (p.revents & POLLIN) ? "OK" : "FAIL", "pidfd_open_poll", buf);
}

// process_vm_readv: parent reads a child; a sibling reads a sibling (with and without PR_SET_PTRACER).
static int vm_read(pid_t pid, void* remote_addr, size_t n, uint8_t expect, std::string& why) {
  std::string local(n, '\0');
  iovec l{local.data(), n}, r{remote_addr, n};
  ssize_t got = process_vm_readv(pid, &l, 1, &r, 1, 0);
  if (got < 0) { why = strerror(errno); return -1; }
  if (size_t(got) != n) { why = "short read " + std::to_string(got); return -1; }
  for (size_t i = 0; i < n; ++i)
    if (uint8_t(local[i]) != expect) { why = "wrong bytes"; return -1; }
  return 0;
}

static int check_vm_readv() {
  const size_t n = 8 << 20;
  auto* buf = static_cast<uint8_t*>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  memset(buf, 0x11, n);
  int rc = 0;
  for (int ptracer_any = 0; ptracer_any < 2; ++ptracer_any) {
    int ready[2], go[2];
    if (pipe(ready) || pipe(go)) return report("FAIL", "process_vm_readv", err("pipe"));
    pid_t target = fork();
    if (target == 0) {
      if (ptracer_any) prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
      memset(buf, 0x5a, n);  // a private copy: only the target holds 0x5a
      char c = 1;
      (void)!write(ready[1], &c, 1);
      (void)!read(go[0], &c, 1);
      _exit(0);
    }
    char c;
    (void)!read(ready[0], &c, 1);
    std::string why;
    double t0 = now_s();
    int a = vm_read(target, buf, n, 0x5a, why);
    double dt = now_s() - t0;
    char line[200];
    if (!ptracer_any) {
      if (a == 0) snprintf(line, sizeof line, "parent read 8 MiB of a child in %.2f ms (%.1f GB/s)", dt * 1e3, n / dt / 1e9);
      else snprintf(line, sizeof line, "parent->child: %s", why.c_str());
      rc |= report(a == 0 ? "OK" : "FAIL", "process_vm_readv_parent", line);
    }
    // sibling: a second child reads the target
    pid_t reader = fork();
    if (reader == 0) {
      std::string w;
      int b = vm_read(target, buf, n, 0x5a, w);
      if (b != 0) fprintf(stderr, "sibling read: %s\n", w.c_str());
      _exit(b == 0 ? 0 : (w.find("Operation not permitted") != std::string::npos ? 3 : 4));
    }
    int st = 0;
    waitpid(reader, &st, 0);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    const char* name = ptracer_any ? "process_vm_readv_sibling_ptracer_any" : "process_vm_readv_sibling";
    snprintf(line, sizeof line, "%s", code == 0 ? "sibling read 8 MiB" : code == 3 ? "EPERM (Yama ptrace_scope?)" : "failed, see stderr");
    rc |= report(code == 0 ? "OK" : "FAIL", name, line);
    (void)!write(go[1], &c, 1);
    waitpid(target, nullptr, 0);
    close(ready[0]); close(ready[1]); close(go[0]); close(go[1]);
  }
  munmap(buf, n);
  return rc;
}

// Huge pages: explicit (MAP_HUGETLB) and transparent (MADV_HUGEPAGE).
static int check_hugepages() {
  const size_t n = 2 << 20;
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (p == MAP_FAILED) report("SKIP", "hugetlb_2mib", err("mmap MAP_HUGETLB (no reserved pool?)"));
  else { memset(p, 1, n); munmap(p, n); report("OK", "hugetlb_2mib", "mmap MAP_HUGETLB 2 MiB"); }
  const size_t m = 64 << 20;
  p = mmap(nullptr, m, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int r = madvise(p, m, MADV_HUGEPAGE);
  std::string detail = r == 0 ? "madvise(MADV_HUGEPAGE) accepted" : err("madvise(MADV_HUGEPAGE)");
  munmap(p, m);
  return report(r == 0 ? "OK" : "SKIP", "thp_madvise", detail);
}

// Loopback TCP and a unix socket with SCM_RIGHTS (an fd passed to another process).
static int check_sockets() {
  int rc = 0;
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (ls < 0 || bind(ls, (sockaddr*)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (sockaddr*)&a, &al))
    rc |= report("FAIL", "tcp_loopback", err("socket/bind/listen"));
  else {
    int cs = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cs, (sockaddr*)&a, sizeof a)) rc |= report("FAIL", "tcp_loopback", err("connect"));
    else {
      int as = accept(ls, nullptr, nullptr);
      const size_t n = 64 << 20;
      std::string tx(1 << 20, 'x'), rx(1 << 20, 0);
      double t0 = now_s();
      pid_t c = fork();
      if (c == 0) { for (size_t s = 0; s < n;) { ssize_t w = write(cs, tx.data(), tx.size()); if (w <= 0) _exit(1); s += w; } _exit(0); }
      size_t got = 0;
      while (got < n) { ssize_t r = read(as, rx.data(), rx.size()); if (r <= 0) break; got += r; }
      waitpid(c, nullptr, 0);
      double dt = now_s() - t0;
      char buf[128];
      snprintf(buf, sizeof buf, "64 MiB over 127.0.0.1 in %.3f s (%.2f GB/s, one stream)", dt, n / dt / 1e9);
      rc |= report(got == n ? "OK" : "FAIL", "tcp_loopback", buf);
      close(as);
    }
    close(cs);
  }
  close(ls);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return rc | report("FAIL", "scm_rights", err("socketpair"));
  pid_t c = fork();
  if (c == 0) {
    char b;
    iovec io{&b, 1};
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))];
    msghdr m{};
    m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = ctl; m.msg_controllen = sizeof ctl;
    if (recvmsg(sv[1], &m, 0) != 1) _exit(2);
    cmsghdr* h = CMSG_FIRSTHDR(&m);
    if (!h || h->cmsg_type != SCM_RIGHTS) _exit(3);
    int fd; memcpy(&fd, CMSG_DATA(h), sizeof fd);
    char got[5] = {};
    if (pread(fd, got, 4, 0) != 4 || memcmp(got, "mesh", 4)) _exit(4);
    _exit(0);
  }
  int mfd = memfd_create("scm", MFD_CLOEXEC);
  (void)!write(mfd, "mesh", 4);
  char b = 'f';
  iovec io{&b, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m{};
  m.msg_iov = &io; m.msg_iovlen = 1; m.msg_control = ctl; m.msg_controllen = sizeof ctl;
  cmsghdr* h = CMSG_FIRSTHDR(&m);
  h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(h), &mfd, sizeof mfd);
  ssize_t s = sendmsg(sv[0], &m, 0);
  int st = 0;
  waitpid(c, &st, 0);
  close(mfd); close(sv[0]); close(sv[1]);
  bool ok = s == 1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  return rc | report(ok ? "OK" : "FAIL", "scm_rights", ok ? "memfd passed over a unix socket and read by the child" : "child exit " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1));
}

int main(int argc, char** argv) {
  if (argc < 2) { fprintf(stderr, "usage: sysprobe devshm|memfd|pidfd|vmreadv|hugepages|sockets\n"); return 2; }
  std::string what = argv[1];
  if (what == "devshm") return check_devshm();
  if (what == "memfd") return check_memfd("/proc/self/exe");
  if (what == "memfd-peer" && argc > 2) return memfd_peer(argv[2]);
  if (what == "pidfd") return check_pidfd();
  if (what == "vmreadv") return check_vm_readv();
  if (what == "hugepages") return check_hugepages();
  if (what == "sockets") return check_sockets();
  fprintf(stderr, "unknown check %s\n", what.c_str());
  return 2;
}
