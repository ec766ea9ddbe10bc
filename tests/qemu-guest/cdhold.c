/* cdhold DEV: the vdev test guest's CD-ROM holder (built by ./guest with cc -nostdlib, x86-64).
 * Opens DEV with O_NONBLOCK (so no medium is needed and Linux's cdrom layer does not auto-close
 * an open tray), locks the door with ioctl CDROM_LOCKDOOR 1 (SCSI PREVENT ALLOW MEDIUM REMOVAL;
 * stays locked while the fd is open), prints "VDEV-GUEST: CD HELD" and pauses forever.
 * On failure prints "VDEV-GUEST: CD HOLD FAILED open|lock errno NN" and exits 1|2. */
static long sc(long n, long a, long b, long c) {
  long r; __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}
static void out(const char *s) { long n = 0; while (s[n]) n++; sc(1, 1, (long)s, n); }
static void fail(const char *what, long e, int rc) {
  char m[] = "errno NN\n";
  m[6] = '0' + (-e / 10) % 10; m[7] = '0' + -e % 10;
  out("VDEV-GUEST: CD HOLD FAILED "); out(what); out(m); sc(60, rc, 0, 0);
}
__asm__(".globl _start\n_start: mov %rsp, %rdi\n and $-16, %rsp\n call cmain\n");
void cmain(long *sp) {
  char **argv = (char **)(sp + 1);
  long fd = sc(2, (long)argv[1], 04000 /* O_RDONLY|O_NONBLOCK */, 0), r;
  if (fd < 0) fail("open ", fd, 1);
  r = sc(16, fd, 0x5329 /* CDROM_LOCKDOOR */, 1);
  if (r < 0) fail("lock ", r, 2);
  out("VDEV-GUEST: CD HELD\n");
  for (;;) sc(34, 0, 0, 0); /* pause */
}
