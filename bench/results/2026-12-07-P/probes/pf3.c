#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static long flt(void){struct rusage r;getrusage(RUSAGE_SELF,&r);return r.ru_minflt;}
int main(int c,char**v){ size_t n=64<<20; int fd=open(v[1],O_RDWR|O_CREAT,0600); posix_fallocate(fd,0,n);
 char*p=mmap(0,n,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); long f0=flt(); double t=now(); int rc=madvise(p,n,MADV_POPULATE_WRITE); double t1=now();
 printf("populate rc=%d: %.2f us/page faults %ld\n",rc,(t1-t)*1e6/(n/4096), flt()-f0);
 f0=flt(); t=now(); for(size_t i=0;i<n;i+=4096)p[i]=3; t1=now(); printf("  then write: %.2f us/page faults %ld\n",(t1-t)*1e6/(n/4096), flt()-f0);
 f0=flt(); t=now(); for(size_t i=0;i<n;i+=4096)p[i]=4; t1=now(); printf("  again: %.2f us/page faults %ld\n",(t1-t)*1e6/(n/4096), flt()-f0);
 unlink(v[1]); return 0;}
