/*
 * A minimal Falco userspace for the real-kernel e2e suite: open a driver with libscap (the library Falco itself
 * opens drivers with), count live events for a few seconds, and print what libscap says about the driver.
 *
 *   scap_count kmod SECONDS            the kernel module, through /dev/scap* (libscap's kmod engine)
 *   scap_count bpf PROBE.o SECONDS     the legacy eBPF probe at PROBE.o (libscap's bpf engine)
 *   scap_count --version -o json_output=true
 *                                      what `falco --version -o json_output=true` prints about drivers: the
 *                                      minimum API and schema versions this libscap accepts
 *
 * Output, one line each: SCAP-OPEN-OK engine=.. open_s=.. driver_api=X.Y.Z driver_schema=X.Y.Z, then
 * SCAP-TICK <events> every second, then SCAP-EVENTS <n> and SCAP-DETAIL ... child_openat_x=<n> drops=<n>.
 * child_openat_x counts openat exit events of a child that opens a file every 20 ms: events decoded from live
 * syscalls, not just a non-zero count. On failure: SCAP-OPEN-FAILED rc=<rc>: <libscap's message>, exit 2.
 * SIGTERM ends the count early (exit 0). Built against libscap at test time (tests/e2e/e2e_trixie.py).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libscap/scap.h>
#include <libscap/scap_engines.h>
#include <libscap/engine/bpf/bpf_public.h>
#include <libscap/engine/kmod/kmod_public.h>

#ifndef DEFAULT_FALCO_DRIVER_VERSION
#define DEFAULT_FALCO_DRIVER_VERSION "8.0.0+driver"
#endif
#ifndef LIBS_VERSION
#define LIBS_VERSION "unknown"
#endif

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int sig) {
	(void)sig;
	g_stop = 1;
}

static double now_s(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void print_version(const char *label, uint64_t v) {
	printf(" %s=%llu.%llu.%llu", label, (unsigned long long)PPM_API_VERSION_MAJOR(v),
	       (unsigned long long)PPM_API_VERSION_MINOR(v), (unsigned long long)PPM_API_VERSION_PATCH(v));
}

static int falco_version_json(void) {
	uint64_t api = SCAP_MINIMUM_DRIVER_API_VERSION, schema = SCAP_MINIMUM_DRIVER_SCHEMA_VERSION;
	printf("{\"default_driver_version\":\"%s\",\"driver_api_version\":\"%llu.%llu.%llu\","
	       "\"driver_schema_version\":\"%llu.%llu.%llu\",\"libs_version\":\"%s\"}\n",
	       DEFAULT_FALCO_DRIVER_VERSION, (unsigned long long)PPM_API_VERSION_MAJOR(api),
	       (unsigned long long)PPM_API_VERSION_MINOR(api), (unsigned long long)PPM_API_VERSION_PATCH(api),
	       (unsigned long long)PPM_API_VERSION_MAJOR(schema), (unsigned long long)PPM_API_VERSION_MINOR(schema),
	       (unsigned long long)PPM_API_VERSION_PATCH(schema), LIBS_VERSION);
	return 0;
}

/* Opens and closes a file every 20 ms until killed: openat syscalls the capture must decode. */
static pid_t start_child(void) {
	pid_t pid = fork();
	if(pid == 0) {
		for(int i = 0; i < 100000; i++) {
			int fd = open("/etc/hostname", O_RDONLY);
			if(fd >= 0) {
				close(fd);
			}
			usleep(20000);
		}
		_exit(0);
	}
	return pid;
}

static int usage(void) {
	fprintf(stderr, "usage: scap_count kmod SECONDS | scap_count bpf PROBE SECONDS\n");
	return 64;
}

int main(int argc, char **argv) {
	if(argc >= 2 && strcmp(argv[1], "--version") == 0) {
		return falco_version_json();
	}
	if(argc < 3) {
		return usage();
	}
	const char *engine = argv[1];
	const char *probe = NULL;
	double seconds;
	if(strcmp(engine, "kmod") == 0 && argc == 3) {
		seconds = atof(argv[2]);
	} else if(strcmp(engine, "bpf") == 0 && argc == 4) {
		probe = argv[2];
		seconds = atof(argv[3]);
	} else {
		return usage();
	}
	if(seconds <= 0 || seconds > 3600) {
		return usage();
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);

	static scap_open_args oargs;
	struct scap_kmod_engine_params kmod_params = {.buffer_bytes_dim = DEFAULT_DRIVER_BUFFER_BYTES_DIM};
	struct scap_bpf_engine_params bpf_params = {.buffer_bytes_dim = DEFAULT_DRIVER_BUFFER_BYTES_DIM,
	                                            .bpf_probe = probe};
	const struct scap_vtable *vtable = probe ? &scap_bpf_engine : &scap_kmod_engine;
	oargs.engine_params = probe ? (void *)&bpf_params : (void *)&kmod_params;
	for(int i = 0; i < PPM_SC_MAX; i++) {
		oargs.ppm_sc_of_interest.ppm_sc[i] = true;
	}
	char err[SCAP_LASTERR_SIZE] = "";
	int32_t rc = 0;
	double t0 = now_s();
	scap_t *h = scap_open(&oargs, vtable, err, &rc);
	if(h == NULL) {
		printf("SCAP-OPEN-FAILED rc=%d: %s\n", rc, err);
		return 2;
	}
	printf("SCAP-OPEN-OK engine=%s open_s=%.2f", engine, now_s() - t0);
	print_version("driver_api", scap_get_driver_api_version(h));
	print_version("driver_schema", scap_get_driver_schema_version(h));
	printf("\n");
	if(scap_start_capture(h) != SCAP_SUCCESS) {
		printf("SCAP-OPEN-FAILED rc=start: %s\n", scap_getlasterr(h));
		scap_close(h);
		return 2;
	}
	pid_t child = start_child();
	uint64_t events = 0, bytes = 0, timeouts = 0, child_openat_x = 0;
	double start = now_s(), next_tick = start + 1;
	while(!g_stop && now_s() - start < seconds) {
		scap_evt *ev = NULL;
		uint16_t cpu = 0;
		uint32_t flags = 0;
		rc = scap_next(h, &ev, &cpu, &flags);
		if(rc == SCAP_SUCCESS) {
			events++;
			bytes += ev->len;
			if(ev->type == PPME_SYSCALL_OPENAT_2_X && child > 0 && ev->tid == (uint64_t)child) {
				child_openat_x++;
			}
		} else if(rc == SCAP_TIMEOUT || rc == SCAP_FILTERED_EVENT) {
			timeouts += rc == SCAP_TIMEOUT;
		} else if(rc == SCAP_EOF) {
			break;
		} else {
			printf("SCAP-NEXT-FAILED rc=%d: %s\n", rc, scap_getlasterr(h));
			break;
		}
		if(now_s() >= next_tick) {
			printf("SCAP-TICK %llu\n", (unsigned long long)events);
			next_tick += 1;
		}
	}
	double secs = now_s() - start;
	if(child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	scap_stats st;
	memset(&st, 0, sizeof(st));
	scap_stop_capture(h);
	scap_get_stats(h, &st);
	printf("SCAP-EVENTS %llu\n", (unsigned long long)events);
	printf("SCAP-DETAIL engine=%s secs=%.1f bytes=%llu timeouts=%llu child_openat_x=%llu kernel_evts=%llu "
	       "drops=%llu\n",
	       engine, secs, (unsigned long long)bytes, (unsigned long long)timeouts,
	       (unsigned long long)child_openat_x, (unsigned long long)st.n_evts, (unsigned long long)st.n_drops);
	scap_close(h);
	return rc == SCAP_SUCCESS || rc == SCAP_TIMEOUT || rc == SCAP_FILTERED_EVENT || rc == SCAP_EOF ? 0 : 1;
}
