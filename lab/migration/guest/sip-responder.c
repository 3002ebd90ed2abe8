/* sip-responder: the lab guest's SIP server (the quick default; Kamailio is the gold standard).
 *
 *   sip-responder [PORT]        (default 5060, UDP, all addresses)
 *
 * Stateless: every OPTIONS gets "200 OK" with the request's Via, From, To (plus a To-tag when
 * it has none), Call-ID and CSeq copied, which is all an availability probe (imsprobe, SIPp,
 * sipsak) matches a reply by. ACK and responses are never answered (RFC 3261 8.2.6, 8.1.3);
 * any other method gets 501, so a load generator pointed at this guest by mistake sees a clear
 * failure instead of a silent success. No state survives a request, so whatever the guest was
 * doing when it was paused for migration, the next datagram after resume is answered at once.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define MAX_DGRAM 65535

/* Is LINE the header NAME (or its compact form C, 0 if none)? Header names are
 * case-insensitive and may have white space before the colon (RFC 3261 7.3.1). */
static int is_header(const char *line, size_t len, const char *name, char c) {
    size_t n = strlen(name);
    size_t i;
    if (len > n && strncasecmp(line, name, n) == 0) {
        i = n;
    } else if (c && len > 1 && (line[0] == c || line[0] == c - 'a' + 'A')) {
        i = 1;
    } else {
        return 0;
    }
    while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
    return i < len && line[i] == ':';
}

/* Appends LEN bytes of S to OUT (capacity CAP, used *O); drops what does not fit. */
static void put(char *out, size_t cap, size_t *o, const char *s, size_t len) {
    if (*o + len > cap) return;
    memcpy(out + *o, s, len);
    *o += len;
}

static void puts0(char *out, size_t cap, size_t *o, const char *s) { put(out, cap, o, s, strlen(s)); }

/* Builds the response to the request IN (N bytes) into OUT; returns its length, 0 = no reply. */
static size_t respond(const char *in, size_t n, char *out, size_t cap) {
    if (n >= 7 && memcmp(in, "SIP/2.0", 7) == 0) return 0; /* a response: never answered */
    if (n >= 4 && memcmp(in, "ACK ", 4) == 0) return 0;
    int options = n >= 8 && memcmp(in, "OPTIONS ", 8) == 0;
    size_t o = 0;
    puts0(out, cap, &o, options ? "SIP/2.0 200 OK\r\n" : "SIP/2.0 501 Not Implemented\r\n");
    const char *p = memchr(in, '\n', n); /* skip the request line */
    const char *end = in + n;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((eol ? eol : end) - p);
        if (len > 0 && p[len - 1] == '\r') len--;
        if (len == 0) break; /* end of the header section */
        if (is_header(p, len, "Via", 'v') || is_header(p, len, "From", 'f') ||
            is_header(p, len, "Call-ID", 'i') || is_header(p, len, "CSeq", 0)) {
            put(out, cap, &o, p, len);
            puts0(out, cap, &o, "\r\n");
        } else if (is_header(p, len, "To", 't')) {
            put(out, cap, &o, p, len);
            /* a dialog-less 200 must carry a To-tag (RFC 3261 8.2.6.2) */
            int tagged = 0;
            for (size_t i = 0; i + 5 <= len; i++)
                if (strncasecmp(p + i, ";tag=", 5) == 0) tagged = 1;
            puts0(out, cap, &o, tagged ? "\r\n" : ";tag=lab-guest\r\n");
        }
        p = eol;
    }
    puts0(out, cap, &o, "Server: imsprobe-lab-guest\r\n"
                        "Allow: OPTIONS\r\n"
                        "Content-Length: 0\r\n\r\n");
    return o;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 5060;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) { perror("sip-responder: socket"); return 1; }
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    me.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(s, (struct sockaddr *)&me, sizeof me) < 0) { perror("sip-responder: bind"); return 1; }
    printf("sip-responder: udp/%d\n", port);
    fflush(stdout);
    static char in[MAX_DGRAM + 1], out[MAX_DGRAM + 1024];
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(s, in, MAX_DGRAM, 0, (struct sockaddr *)&peer, &plen);
        if (n <= 0) continue;
        size_t len = respond(in, (size_t)n, out, sizeof out);
        if (len) sendto(s, out, len, 0, (struct sockaddr *)&peer, plen);
    }
}
