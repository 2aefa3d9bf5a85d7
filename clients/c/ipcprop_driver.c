/*
 * ipcprop_driver.c: the C client of the ipcprop driver protocol, version 1
 * (docs/PROTOCOL.md). The API is documented in ipcprop_driver.h.
 */
#include "ipcprop_driver.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------ */
/* Environment                                                                          */

static int env_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("ipcprop: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

/* Parses s as a decimal number without sign, leading or trailing bytes, at most max. */
static int parse_decimal(const char *s, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static const char *nonempty_env(const char *name) {
    const char *v = getenv(name);
    return (v != NULL && *v != '\0') ? v : NULL;
}

int ipcprop_env(struct ipcprop_env *out) {
    uint64_t v;
    const char *s;
    memset(out, 0, sizeof *out);
    out->index = -1;

    s = getenv("IPCPROP_PROTOCOL");
    if (s != NULL && strcmp(s, "1") != 0)
        return env_error("IPCPROP_PROTOCOL is \"%s\": this client speaks version %d", s,
                         IPCPROP_PROTOCOL_VERSION);
    s = getenv("IPCPROP_SENDERS");
    if (s == NULL)
        return env_error("IPCPROP_SENDERS is not set: run this program under "
                         "`ipcprop check --exec`");
    if (parse_decimal(s, UINT32_MAX, &v) != 0 || v < 1 || v > INT32_MAX)
        return env_error("IPCPROP_SENDERS is \"%s\", not a number of senders (1 or more)", s);
    out->senders = (uint32_t)v;
    if ((out->control = nonempty_env("IPCPROP_CONTROL")) == NULL)
        return env_error("IPCPROP_CONTROL is not set or empty");
    if ((out->dir = nonempty_env("IPCPROP_DIR")) == NULL)
        return env_error("IPCPROP_DIR is not set or empty");
    if ((out->case_name = nonempty_env("IPCPROP_CASE")) == NULL)
        return env_error("IPCPROP_CASE is not set or empty");

    s = getenv("IPCPROP_ROLE");
    if (s == NULL)
        out->role = IPCPROP_ROLE_ANY;
    else if (strcmp(s, "sender") == 0)
        out->role = IPCPROP_ROLE_SENDER;
    else if (strcmp(s, "receiver") == 0)
        out->role = IPCPROP_ROLE_RECEIVER;
    else
        return env_error("IPCPROP_ROLE is \"%s\", not \"sender\" or \"receiver\"", s);

    s = getenv("IPCPROP_INDEX");
    if (out->role == IPCPROP_ROLE_SENDER) {
        if (s == NULL)
            return env_error("IPCPROP_INDEX is not set for a sender");
        if (parse_decimal(s, UINT32_MAX, &v) != 0 || v >= out->senders)
            return env_error("IPCPROP_INDEX is \"%s\", not a sender index from 0 to %u", s,
                             (unsigned)(out->senders - 1));
        out->index = (int)v;
    } else if (s != NULL) {
        return env_error("IPCPROP_INDEX is set (\"%s\") but IPCPROP_ROLE is not \"sender\"", s);
    }

    s = getenv("IPCPROP_RECOVER");
    if (s == NULL || *s == '\0' || strcmp(s, "0") == 0)
        out->recover = 0;
    else if (strcmp(s, "1") == 0)
        out->recover = 1;
    else
        return env_error("IPCPROP_RECOVER is \"%s\", neither 1 (a recovery run) nor 0", s);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Messages                                                                             */

static uint64_t splitmix_next(uint64_t *state) {
    uint64_t z;
    *state += UINT64_C(0x9e3779b97f4a7c15);
    z = *state;
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void ipcprop_gen(uint64_t seed, uint32_t sender, uint32_t seq, size_t len, uint8_t *out) {
    uint64_t state = seed ^ ((((uint64_t)sender << 32) + seq) * UINT64_C(0xd6e8feb86659fd93));
    size_t head = len, i;
    state ^= (uint64_t)len * UINT64_C(0xa0761d6478bd642f);
    if (len >= 8) {
        put_le32(out, sender);
        put_le32(out + 4, seq);
        out += 8;
        head = len - 8;
    }
    for (i = 0; i + 8 <= head; i += 8) {
        uint64_t x = splitmix_next(&state);
        for (int b = 0; b < 8; b++)
            out[i + (size_t)b] = (uint8_t)(x >> (8 * b));
    }
    if (i < head) {
        uint64_t x = splitmix_next(&state);
        for (int b = 0; i < head; i++, b++)
            out[i] = (uint8_t)(x >> (8 * b));
    }
}

/* CRC-32C, reflected polynomial 0x82f63b78. */
static const uint32_t crc32c_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
    0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
    0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
    0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
    0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
    0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
    0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
    0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
    0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
    0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
    0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
    0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
    0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
    0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
    0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
    0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
    0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
    0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
    0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
    0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
    0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
    0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
    0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
    0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
    0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
    0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
    0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
    0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
    0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
    0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
    0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
    0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
    0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
    0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
    0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
    0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
    0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

uint32_t ipcprop_crc32c(const uint8_t *p, size_t n) {
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        crc = crc32c_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return crc ^ 0xffffffffu;
}

/* ------------------------------------------------------------------------------------ */
/* Parsing the harness's lines: flat JSON objects                                       */

struct jp {
    const char *p, *end;
    char *err;
    size_t errlen;
};

static int jerr(struct jp *j, const char *fmt, ...) {
    if (j->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->err, j->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void skip_ws(struct jp *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int read_hex4(struct jp *j, unsigned *out) {
    unsigned v = 0;
    if (j->end - j->p < 4)
        return jerr(j, "a \\u escape with fewer than 4 hex digits");
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(j->p[i]);
        if (d < 0)
            return jerr(j, "a \\u escape with a non-hex digit");
        v = v * 16 + (unsigned)d;
    }
    j->p += 4;
    *out = v;
    return 0;
}

/* Appends byte c to dst if there is room (keeping a NUL), else sets *overflow. */
static void put_byte(char *dst, size_t cap, size_t *n, int *overflow, unsigned char c) {
    if (dst != NULL && *n + 1 < cap)
        dst[*n] = (char)c;
    else
        *overflow = 1;
    (*n)++;
}

/* Parses a JSON string at j->p (which is at its opening quote), decoding it into
 * dst[0..cap) (NUL-terminated; *overflow set if it did not fit; dst may be NULL). */
static int parse_string(struct jp *j, char *dst, size_t cap, int *overflow) {
    size_t n = 0;
    *overflow = 0;
    j->p++; /* the opening quote */
    for (;;) {
        if (j->p >= j->end)
            return jerr(j, "an unterminated string");
        unsigned char c = (unsigned char)*j->p++;
        if (c == '"')
            break;
        if (c < 0x20)
            return jerr(j, "a control character inside a string");
        if (c != '\\') {
            put_byte(dst, cap, &n, overflow, c);
            continue;
        }
        if (j->p >= j->end)
            return jerr(j, "an unterminated string");
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/':
            put_byte(dst, cap, &n, overflow, c);
            break;
        case 'b': put_byte(dst, cap, &n, overflow, '\b'); break;
        case 'f': put_byte(dst, cap, &n, overflow, '\f'); break;
        case 'n': put_byte(dst, cap, &n, overflow, '\n'); break;
        case 'r': put_byte(dst, cap, &n, overflow, '\r'); break;
        case 't': put_byte(dst, cap, &n, overflow, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (read_hex4(j, &cp) != 0)
                return -1;
            if (cp >= 0xd800 && cp < 0xdc00 && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u') {
                const char *save = j->p;
                j->p += 2;
                if (read_hex4(j, &lo) != 0)
                    return -1;
                if (lo >= 0xdc00 && lo < 0xe000)
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else
                    j->p = save; /* a lone high surrogate, then another escape */
            }
            /* UTF-8 (a lone surrogate is encoded as it is: it only ever reaches a field
             * this client ignores or an op name that matches nothing). */
            if (cp < 0x80) {
                put_byte(dst, cap, &n, overflow, (unsigned char)cp);
            } else if (cp < 0x800) {
                put_byte(dst, cap, &n, overflow, (unsigned char)(0xc0 | (cp >> 6)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | (cp & 0x3f)));
            } else if (cp < 0x10000) {
                put_byte(dst, cap, &n, overflow, (unsigned char)(0xe0 | (cp >> 12)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | (cp & 0x3f)));
            } else {
                put_byte(dst, cap, &n, overflow, (unsigned char)(0xf0 | (cp >> 18)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
                put_byte(dst, cap, &n, overflow, (unsigned char)(0x80 | (cp & 0x3f)));
            }
            break;
        }
        default:
            return jerr(j, "an invalid escape \\%c in a string", c);
        }
    }
    if (dst != NULL && cap > 0)
        dst[n < cap ? n : cap - 1] = '\0';
    return 0;
}

/* Parses a JSON number. *is_uint is set for an integer without sign, fraction or exponent
 * that fits in 64 bits, its value in *u. */
static int parse_number(struct jp *j, int *is_uint, uint64_t *u) {
    int neg = 0, plain = 1, fits = 1;
    uint64_t v = 0;
    if (j->p < j->end && *j->p == '-') {
        neg = 1;
        j->p++;
    }
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return jerr(j, "a number without digits");
    if (*j->p == '0') {
        j->p++;
    } else {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
            unsigned d = (unsigned)(*j->p - '0');
            if (v > (UINT64_MAX - d) / 10)
                fits = 0;
            else
                v = v * 10 + d;
            j->p++;
        }
    }
    if (j->p < j->end && *j->p == '.') {
        plain = 0;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jerr(j, "a number with no digit after its decimal point");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        plain = 0;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9')
            return jerr(j, "a number with no digit in its exponent");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
            j->p++;
    }
    *is_uint = plain && fits && !neg;
    *u = v;
    return 0;
}

static int literal(struct jp *j, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
        return jerr(j, "an invalid value");
    j->p += n;
    return 0;
}

/* What a value was: enough for the fields this client reads. */
enum jtype { J_NONE = 0, J_STRING, J_NUMBER, J_BOOL, J_NULL, J_OBJECT, J_ARRAY };

struct jval {
    enum jtype type;
    int is_uint;  /* J_NUMBER: a non-negative integer below 2^64, in u */
    uint64_t u;
    int overflow; /* J_STRING: longer than s holds */
    char s[64];   /* J_STRING */
};

#define MAX_DEPTH 64

static int parse_value(struct jp *j, struct jval *v, int depth);

static int parse_container(struct jp *j, int depth, char close) {
    struct jval ignored;
    int overflow;
    if (depth >= MAX_DEPTH)
        return jerr(j, "values nested more than %d deep", MAX_DEPTH);
    j->p++; /* { or [ */
    skip_ws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        skip_ws(j);
        if (close == '}') {
            if (j->p >= j->end || *j->p != '"')
                return jerr(j, "an object key that is not a string");
            if (parse_string(j, NULL, 0, &overflow) != 0)
                return -1;
            skip_ws(j);
            if (j->p >= j->end || *j->p != ':')
                return jerr(j, "a missing ':' after an object key");
            j->p++;
        }
        if (parse_value(j, &ignored, depth + 1) != 0)
            return -1;
        skip_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == close) {
            j->p++;
            return 0;
        }
        return jerr(j, "a missing ',' or '%c'", close);
    }
}

static int parse_value(struct jp *j, struct jval *v, int depth) {
    memset(v, 0, sizeof *v);
    skip_ws(j);
    if (j->p >= j->end)
        return jerr(j, "a missing value");
    switch (*j->p) {
    case '"':
        v->type = J_STRING;
        return parse_string(j, v->s, sizeof v->s, &v->overflow);
    case '{':
        v->type = J_OBJECT;
        return parse_container(j, depth, '}');
    case '[':
        v->type = J_ARRAY;
        return parse_container(j, depth, ']');
    case 't':
        v->type = J_BOOL;
        return literal(j, "true");
    case 'f':
        v->type = J_BOOL;
        return literal(j, "false");
    case 'n':
        v->type = J_NULL;
        return literal(j, "null");
    default:
        v->type = J_NUMBER;
        return parse_number(j, &v->is_uint, &v->u);
    }
}

enum field { F_OP, F_SEQ, F_SENDER, F_LEN, F_SEED, F_COUNT, F_N };
static const char *const field_names[F_N] = {"op", "seq", "sender", "len", "seed", "count"};

static int want_uint(struct jp *j, const struct jval *f, const char *name, uint64_t max,
                     uint64_t *out) {
    if (f[0].type == J_NONE)
        return jerr(j, "no \"%s\"", name);
    if (f[0].type != J_NUMBER || !f[0].is_uint || f[0].u > max)
        return jerr(j, "\"%s\" is not an integer from 0 to %llu", name,
                    (unsigned long long)max);
    *out = f[0].u;
    return 0;
}

int ipcprop_parse_command(const char *line, size_t n, struct ipcprop_command *out, char *err,
                          size_t errlen) {
    struct jp j = {line, line + n, err, errlen};
    struct jval fields[F_N];
    uint64_t v = 0;
    int overflow;

    memset(out, 0, sizeof *out);
    memset(fields, 0, sizeof fields);
    if (errlen > 0)
        err[0] = '\0';
    skip_ws(&j);
    if (j.p >= j.end || *j.p != '{')
        return jerr(&j, "not a JSON object");
    j.p++;
    skip_ws(&j);
    if (j.p < j.end && *j.p == '}') {
        j.p++;
    } else {
        for (;;) {
            char key[16];
            struct jval val;
            skip_ws(&j);
            if (j.p >= j.end || *j.p != '"')
                return jerr(&j, "an object key that is not a string");
            if (parse_string(&j, key, sizeof key, &overflow) != 0)
                return -1;
            skip_ws(&j);
            if (j.p >= j.end || *j.p != ':')
                return jerr(&j, "a missing ':' after an object key");
            j.p++;
            if (parse_value(&j, &val, 1) != 0)
                return -1;
            if (!overflow)
                for (int f = 0; f < F_N; f++)
                    if (strcmp(key, field_names[f]) == 0)
                        fields[f] = val;
            skip_ws(&j);
            if (j.p < j.end && *j.p == ',') {
                j.p++;
                continue;
            }
            if (j.p < j.end && *j.p == '}') {
                j.p++;
                break;
            }
            return jerr(&j, "a missing ',' or '}'");
        }
    }
    skip_ws(&j);
    if (j.p != j.end)
        return jerr(&j, "bytes after the object");

    if (fields[F_OP].type == J_NONE)
        return jerr(&j, "no \"op\"");
    if (fields[F_OP].type != J_STRING)
        return jerr(&j, "\"op\" is not a string");
    const char *op = fields[F_OP].overflow ? "" : fields[F_OP].s;
    if (strcmp(op, "send") == 0) {
        out->op = IPCPROP_OP_SEND;
        if (want_uint(&j, &fields[F_SEQ], "seq", UINT32_MAX, &v) != 0)
            return -1;
        out->seq = (uint32_t)v;
        if (want_uint(&j, &fields[F_SENDER], "sender", UINT32_MAX, &v) != 0)
            return -1;
        out->sender = (uint32_t)v;
        if (want_uint(&j, &fields[F_LEN], "len", UINT64_MAX, &out->len) != 0)
            return -1;
        if (fields[F_SEED].type == J_NONE)
            return jerr(&j, "no \"seed\"");
        if (fields[F_SEED].type != J_STRING || fields[F_SEED].overflow ||
            parse_decimal(fields[F_SEED].s, UINT64_MAX, &out->seed) != 0)
            return jerr(&j, "\"seed\" is not a string of decimal digits below 2^64");
    } else if (strcmp(op, "recv") == 0) {
        out->op = IPCPROP_OP_RECV;
        if (want_uint(&j, &fields[F_COUNT], "count", UINT64_MAX, &out->count) != 0)
            return -1;
    } else if (strcmp(op, "close") == 0) {
        out->op = IPCPROP_OP_CLOSE;
    } else if (strcmp(op, "exit") == 0) {
        out->op = IPCPROP_OP_EXIT;
    } else {
        return jerr(&j, "an unknown op \"%.40s\"", op);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* The control connection                                                               */

/* The longest line this client writes: a `received` with 4096 bytes in hex, or an error
 * text of IPCPROP_ERR_LEN bytes each escaped as \u00XX at worst, and the other fields. */
#define OUT_CAP (2 * IPCPROP_DATA_MAX + 6 * IPCPROP_ERR_LEN + 256)

struct session {
    int fd;
    size_t in_len;  /* bytes in `in` */
    size_t in_line; /* length of the line handed out last (with its newline), to drop */
    size_t out_len;
    char in[IPCPROP_MAX_LINE + 1];
    char out[OUT_CAP];
};

static void noop_handler(int sig) {
    (void)sig;
}

static void connection_gone(const char *what) {
    fprintf(stderr, "ipcprop: the control connection ended (%s): the harness is gone, "
                    "exiting\n", what);
    _exit(3);
}

static struct session *session_open(void) {
    const char *path = getenv("IPCPROP_CONTROL");
    struct sockaddr_un addr;
    struct sigaction sa;
    struct session *s;

    if (path == NULL || *path == '\0') {
        env_error("IPCPROP_CONTROL is not set: run this program under `ipcprop check --exec`");
        return NULL;
    }
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) {
        env_error("IPCPROP_CONTROL is longer than a Unix socket path can be: %s", path);
        return NULL;
    }
    memcpy(addr.sun_path, path, strlen(path));
    s = malloc(sizeof *s);
    if (s == NULL) {
        env_error("out of memory");
        return NULL;
    }
    s->in_len = s->in_line = s->out_len = 0;
    s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        env_error("socket: %s", strerror(errno));
        free(s);
        return NULL;
    }
    if (connect(s->fd, (const struct sockaddr *)&addr, sizeof addr) != 0) {
        env_error("connecting to IPCPROP_CONTROL %s: %s", path, strerror(errno));
        close(s->fd);
        free(s);
        return NULL;
    }
    /* SIGURG storms must interrupt blocking calls: a handler, and no SA_RESTART. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = noop_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    if (sigaction(SIGURG, &sa, NULL) != 0) {
        env_error("sigaction(SIGURG): %s", strerror(errno));
        close(s->fd);
        free(s);
        return NULL;
    }
    return s;
}

static int session_close(struct session *s, int rc) {
    close(s->fd);
    free(s);
    return rc;
}

/* The next line from the harness, without its newline, in s->in[0..*n). Returns 0, or -1
 * (message on standard error) for a line too long; exits if the connection ends. */
static int read_line(struct session *s, const char **line, size_t *n) {
    size_t scanned = 0;
    if (s->in_line > 0) {
        memmove(s->in, s->in + s->in_line, s->in_len - s->in_line);
        s->in_len -= s->in_line;
        s->in_line = 0;
    }
    for (;;) {
        char *nl = memchr(s->in + scanned, '\n', s->in_len - scanned);
        if (nl != NULL) {
            *line = s->in;
            *n = (size_t)(nl - s->in);
            s->in_line = *n + 1;
            return 0;
        }
        scanned = s->in_len;
        if (s->in_len == sizeof s->in) {
            env_error("the harness sent a line longer than %d bytes", IPCPROP_MAX_LINE);
            return -1;
        }
        ssize_t r = read(s->fd, s->in + s->in_len, sizeof s->in - s->in_len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            connection_gone(strerror(errno));
        if (r == 0)
            connection_gone(s->in_len > 0 ? "end of file inside a line" : "end of file");
        s->in_len += (size_t)r;
    }
}

static void out_raw(struct session *s, const char *text) {
    size_t n = strlen(text);
    if (n > OUT_CAP - s->out_len)
        n = OUT_CAP - s->out_len; /* cannot happen: OUT_CAP covers the longest line */
    memcpy(s->out + s->out_len, text, n);
    s->out_len += n;
}

static void out_u64(struct session *s, uint64_t v) {
    char tmp[24];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    out_raw(s, tmp);
}

static void out_hex(struct session *s, const uint8_t *p, size_t n) {
    static const char digits[] = "0123456789abcdef";
    if (2 * n > OUT_CAP - s->out_len)
        n = (OUT_CAP - s->out_len) / 2; /* cannot happen either */
    for (size_t i = 0; i < n; i++) {
        s->out[s->out_len++] = digits[p[i] >> 4];
        s->out[s->out_len++] = digits[p[i] & 15];
    }
}

/* The length of the well-formed UTF-8 sequence at p[0..n), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n) {
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f;
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* A JSON string of text, quoted; bytes that are not UTF-8 become '?'. */
static void out_string(struct session *s, const char *text) {
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);
    out_raw(s, "\"");
    for (size_t i = 0; i < n && s->out_len + 8 < OUT_CAP;) {
        unsigned char c = p[i];
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tmp[2] = '\0';
            out_raw(s, tmp);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            out_raw(s, tmp);
            i++;
        } else {
            size_t len = utf8_len(p + i, n - i);
            if (len == 0) {
                out_raw(s, "?");
                i++;
            } else {
                memcpy(s->out + s->out_len, p + i, len);
                s->out_len += len;
                i += len;
            }
        }
    }
    out_raw(s, "\"");
}

/* Starts a line: `{"ev":"<ev>"`. */
static void out_begin_event(struct session *s, const char *ev) {
    s->out_len = 0;
    out_raw(s, "{\"ev\":\"");
    out_raw(s, ev);
    out_raw(s, "\"");
}

/* Ends the line with `"t"`, taken now, and writes it whole; exits if the connection is
 * gone. */
static void out_send(struct session *s) {
    struct timespec ts;
    const char *p;
    size_t left;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    out_raw(s, s->out_len > 1 ? ",\"t\":" : "\"t\":");
    out_u64(s, (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec);
    out_raw(s, "}\n");
    p = s->out;
    left = s->out_len;
    while (left > 0) {
        ssize_t w = send(s->fd, p, left, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            connection_gone(strerror(errno));
        p += w;
        left -= (size_t)w;
    }
    s->out_len = 0;
}

static void out_hello(struct session *s, const char *role, int index) {
    s->out_len = 0;
    out_raw(s, "{\"hello\":\"");
    out_raw(s, role);
    out_raw(s, "\"");
    if (index >= 0) {
        out_raw(s, ",\"index\":");
        out_u64(s, (uint64_t)index);
    }
    out_raw(s, ",\"pid\":");
    out_u64(s, (uint64_t)getpid());
    out_raw(s, ",\"protocol\":1");
    out_send(s);
}

/* Reads and parses the next command; -1 (with a message) for a bad line. */
static int next_command(struct session *s, struct ipcprop_command *cmd) {
    const char *line;
    size_t n;
    char err[160];
    if (read_line(s, &line, &n) != 0)
        return -1;
    if (ipcprop_parse_command(line, n, cmd, err, sizeof err) != 0) {
        env_error("the harness sent a line this client does not understand (%s): %.*s", err,
                  (int)(n > 200 ? 200 : n), line);
        return -1;
    }
    return 0;
}

static const char *op_name(enum ipcprop_op op) {
    switch (op) {
    case IPCPROP_OP_SEND: return "send";
    case IPCPROP_OP_RECV: return "recv";
    case IPCPROP_OP_CLOSE: return "close";
    case IPCPROP_OP_EXIT: return "exit";
    }
    return "?";
}

/* ------------------------------------------------------------------------------------ */
/* The roles                                                                            */

int ipcprop_serve_sender(int index, ipcprop_send_fn send_fn, ipcprop_close_fn close_fn,
                         void *ctx) {
    struct session *s;
    struct ipcprop_command cmd;
    uint8_t *msg = NULL;
    size_t cap = 0;
    char err[IPCPROP_ERR_LEN];
    int rc = -1;

    if (index < 0)
        return env_error("ipcprop_serve_sender: a negative sender index (%d)", index);
    if ((s = session_open()) == NULL)
        return -1;
    out_hello(s, "sender", index);
    for (;;) {
        if (next_command(s, &cmd) != 0)
            break;
        if (cmd.op == IPCPROP_OP_EXIT) {
            if (close_fn != NULL)
                close_fn(ctx);
            out_begin_event(s, "bye");
            out_send(s);
            rc = 0;
            break;
        }
        if (cmd.op != IPCPROP_OP_SEND) {
            env_error("the harness sent \"%s\" to a sender", op_name(cmd.op));
            break;
        }
        if (cmd.len > SIZE_MAX) {
            env_error("a message of %llu bytes does not fit in memory",
                      (unsigned long long)cmd.len);
            break;
        }
        if (cmd.len > cap || msg == NULL) {
            uint8_t *bigger = realloc(msg, cmd.len > 0 ? (size_t)cmd.len : 1);
            if (bigger == NULL) {
                env_error("out of memory for a message of %llu bytes",
                          (unsigned long long)cmd.len);
                break;
            }
            msg = bigger;
            cap = (size_t)cmd.len;
        }
        ipcprop_gen(cmd.seed, cmd.sender, cmd.seq, (size_t)cmd.len, msg);

        out_begin_event(s, "sending");
        out_raw(s, ",\"seq\":");
        out_u64(s, cmd.seq);
        out_send(s);

        err[0] = '\0';
        int r = send_fn(ctx, msg, (size_t)cmd.len, err, sizeof err);
        err[sizeof err - 1] = '\0';
        if (r == 0) {
            out_begin_event(s, "sent");
            out_raw(s, ",\"seq\":");
            out_u64(s, cmd.seq);
        } else {
            if (r != IPCPROP_DISCONNECTED && r != IPCPROP_FAILED && err[0] == '\0')
                snprintf(err, sizeof err, "the send callback returned %d", r);
            out_begin_event(s, "send_failed");
            out_raw(s, ",\"seq\":");
            out_u64(s, cmd.seq);
            out_raw(s, ",\"error\":");
            out_string(s, err[0] != '\0' ? err : "send failed");
            out_raw(s, r == IPCPROP_DISCONNECTED ? ",\"disconnected\":true"
                                                 : ",\"disconnected\":false");
        }
        out_send(s);
    }
    free(msg);
    return session_close(s, rc);
}

int ipcprop_serve_receiver(ipcprop_recv_fn recv_fn, ipcprop_close_fn close_fn, void *ctx) {
    struct session *s;
    struct ipcprop_command cmd;
    char err[IPCPROP_ERR_LEN];
    uint64_t got = 0;
    int closed = 0, rc = -1;

    if ((s = session_open()) == NULL)
        return -1;
    out_hello(s, "receiver", -1);
    for (;;) {
        if (next_command(s, &cmd) != 0)
            break;
        if (cmd.op == IPCPROP_OP_EXIT || cmd.op == IPCPROP_OP_CLOSE) {
            if (close_fn != NULL && !closed)
                close_fn(ctx);
            closed = 1;
            out_begin_event(s, cmd.op == IPCPROP_OP_EXIT ? "bye" : "closed");
            out_send(s);
            if (cmd.op == IPCPROP_OP_EXIT) {
                rc = 0;
                break;
            }
            continue;
        }
        if (cmd.op != IPCPROP_OP_RECV) {
            env_error("the harness sent \"%s\" to the receiver", op_name(cmd.op));
            break;
        }
        for (uint64_t i = 0; i < cmd.count; i++) {
            const uint8_t *msg = NULL;
            size_t len = 0;

            out_begin_event(s, "receiving");
            out_raw(s, ",\"got\":");
            out_u64(s, got);
            out_send(s);

            err[0] = '\0';
            int r = recv_fn(ctx, &msg, &len, err, sizeof err);
            err[sizeof err - 1] = '\0';
            if (r == 0 && msg == NULL && len > 0) {
                r = IPCPROP_FAILED;
                snprintf(err, sizeof err, "the recv callback returned %zu bytes at NULL", len);
            }
            if (r == 0) {
                out_begin_event(s, "received");
                if (len <= IPCPROP_DATA_MAX) {
                    out_raw(s, ",\"data\":\"");
                    out_hex(s, msg, len);
                    out_raw(s, "\"");
                } else {
                    out_raw(s, ",\"len\":");
                    out_u64(s, len);
                    out_raw(s, ",\"crc\":");
                    out_u64(s, ipcprop_crc32c(msg, len));
                    out_raw(s, ",\"id\":\"");
                    out_hex(s, msg, 8);
                    out_raw(s, "\"");
                }
                out_send(s);
                got++;
                continue;
            }
            if (r == IPCPROP_EOS) {
                out_begin_event(s, "eos");
            } else if (r == IPCPROP_CUT_OFF) {
                out_begin_event(s, "cut_off");
                out_raw(s, ",\"error\":");
                out_string(s, err[0] != '\0' ? err : "the stream ended inside a message");
            } else {
                if (r != IPCPROP_FAILED && err[0] == '\0')
                    snprintf(err, sizeof err, "the recv callback returned %d", r);
                out_begin_event(s, "recv_failed");
                out_raw(s, ",\"error\":");
                out_string(s, err[0] != '\0' ? err : "receive failed");
            }
            out_send(s);
            break;
        }
    }
    return session_close(s, rc);
}
