#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
int main(int c,char**v){ size_t n=64<<20; int fd=open(v[1],O_RDWR|O_CREAT,0600); 
 if(atoi(v[2])==1) posix_fallocate(fd,0,n); else if (atoi(v[2])==2) { char *b=calloc(1,n); write(fd,b,n); fsync(fd);} else ftruncate(fd,n);
 char*p=mmap(0,n,PROT_READ|PROT_WRITE,MAP_SHARED,fd,0); double t=now(); for(size_t i=0;i<n;i+=4096)p[i]=1; double t1=now();
 printf("mode %s: %.2f us/page first write\n",v[2],(t1-t)*1e6/(n/4096));
 msync(p,n,MS_SYNC); t=now(); for(size_t i=0;i<n;i+=4096)p[i]=2; t1=now(); printf("  after msync (clean): %.2f us/page\n",(t1-t)*1e6/(n/4096));
 t=now(); for(size_t i=0;i<n;i+=4096)p[i]=3; t1=now(); printf("  dirty: %.2f us/page\n",(t1-t)*1e6/(n/4096)); unlink(v[1]); return 0;}
