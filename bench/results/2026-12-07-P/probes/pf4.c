#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/uio.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static char *p; static size_t n=64<<20; static int mode;
static void *helper(void *a){ (void)a; if(mode==0) madvise(p,n,MADV_POPULATE_WRITE);
  else if(mode==1){ madvise(p,n,MADV_POPULATE_WRITE); volatile char s=0; for(size_t i=0;i<n;i+=4096) s+=((volatile char*)p)[i]; }
  else if(mode==2){ for(size_t i=0;i<n;i+=4096) ((volatile char*)p)[i]=0; }
  else if(mode==3){ madvise(p,n,MADV_POPULATE_READ); volatile char s=0; for(size_t i=0;i<n;i+=4096) s+=((volatile char*)p)[i]; }
  else if(mode==4){ madvise(p,n,MADV_POPULATE_WRITE); static char buf[512]; struct iovec l={buf,512}; static struct iovec r[512];
     for(size_t i=0;i<n;i+=512*4096){ int k=0; for(size_t j=i;j<n&&k<512;j+=4096,k++){r[k].iov_base=p+j;r[k].iov_len=1;} if(process_vm_readv(getpid(),&l,1,r,k,0)<0) perror("pvr"); } }
  return 0;}
int main(int c,char**v){ mode=atoi(v[2]); int fd=open(v[1],O_RDWR|O_CREAT,0600); posix_fallocate(fd,0,n);
 p=mmap(0,n,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); pthread_t t; double t0=now(); pthread_create(&t,0,helper,0); pthread_join(t,0); double t1=now();
 double a=now(); for(size_t i=0;i<n;i+=4096)p[i]=3; double b=now();
 printf("mode %d: helper %.2f us/page, then main write %.2f us/page\n",mode,(t1-t0)*1e6/(n/4096),(b-a)*1e6/(n/4096));
 unlink(v[1]); return 0;}
