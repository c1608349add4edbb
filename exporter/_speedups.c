/*
 * exporter._speedups: the decoder's fast path (exporter/event.py,
 * _fast_event) in C.
 *
 * The pure-Python _fast_event is the reference: this module computes the
 * same AuditEvent from the same line, and where it is unsure it either
 * calls back into the Python helpers (a timestamp not in the API server's
 * own form, a user name not seen before) or answers None, which sends the
 * line to the general decoder exactly as the Python fast path would.
 * tests/test_speedups.py holds the two to the same result, slot by slot.
 *
 * What it saves is the interpreter's work between msgspec's typed decode
 * and the finished event: some thirty attribute reads and writes and two
 * timestamp parses per event. It reads the fields of msgspec's Struct and
 * writes the slots of AuditEvent at the offsets their member descriptors
 * give, looked up and checked once by setup().
 *
 * Built by setup.py as an optional extension: without a C compiler the
 * package installs and runs on the Python fast path alone.
 */
#define _GNU_SOURCE /* memmem */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#ifndef Py_READONLY
#define Py_READONLY READONLY
#endif

/* AuditEvent's slots: every one is written for each event */
enum {
    E_OBJ, E_REQUEST, E_REQUEST_RAW, E_ANNOTATIONS, E_API_GROUP, E_AUDIT_ID,
    E_CODE, E_HAS_BODY, E_IMPERSONATED_USER, E_LEVEL, E_NAME, E_NAMESPACE,
    E_RAW, E_RECEIVED_TS, E_REQUEST_URI, E_RESOURCE, E_RULES, E_SEVERITY,
    E_SOURCE_IP, E_STAGE, E_STAGE_TIME, E_STAGE_TS, E_SUBRESOURCE,
    E_USER_AGENT, E_USER_KIND, E_USERNAME, E_VERB, E_COUNT
};
static const char *const event_slots[E_COUNT] = {
    "_obj", "_request", "_request_raw", "annotations", "api_group", "audit_id",
    "code", "has_body", "impersonated_user", "level", "name", "namespace",
    "raw", "received_ts", "request_uri", "resource", "rules", "severity",
    "source_ip", "stage", "stage_time", "stage_ts", "subresource",
    "user_agent", "user_kind", "username", "verb",
};

/* the fields of exporter.event._Fast that are read */
enum {
    F_AUDIT_ID, F_STAGE, F_VERB, F_KIND, F_API_VERSION, F_LEVEL,
    F_REQUEST_URI, F_USER_AGENT, F_USER, F_IMPERSONATED_USER, F_SOURCE_IPS,
    F_OBJECT_REF, F_RESPONSE_STATUS, F_ANNOTATIONS, F_RECEIVED, F_STAGE_AT,
    F_REQUEST_OBJECT, F_RESPONSE_OBJECT, F_COUNT
};
static const char *const fast_fields[F_COUNT] = {
    "auditID", "stage", "verb", "kind", "apiVersion", "level",
    "requestURI", "userAgent", "user", "impersonatedUser", "sourceIPs",
    "objectRef", "responseStatus", "annotations", "requestReceivedTimestamp",
    "stageTimestamp", "requestObject", "responseObject",
};

enum { R_RESOURCE, R_SUBRESOURCE, R_NAMESPACE, R_NAME, R_API_GROUP, R_COUNT };
static const char *const ref_fields[R_COUNT] = {
    "resource", "subresource", "namespace", "name", "apiGroup",
};

typedef struct {
    int ready;
    PyTypeObject *event_type;
    PyTypeObject *fast_type;
    PyTypeObject *user_type;
    PyTypeObject *ref_type;
    PyTypeObject *status_type;
    Py_ssize_t event_off[E_COUNT];
    Py_ssize_t fast_off[F_COUNT];
    Py_ssize_t ref_off[R_COUNT];
    Py_ssize_t username_off;
    Py_ssize_t code_off;
    PyObject *decode;        /* msgspec's typed decode of a line into _Fast */
    PyObject *decode_errors; /* what a refused line raises: (DecodeError, RecursionError) */
    PyObject *api_time;      /* exporter.event._api_time */
    PyObject *invalid;       /* exporter.event.InvalidEvent */
    PyObject *user_kind;     /* exporter.event._user_kind: classify and remember */
    PyObject *user_kinds;    /* its dict, read here first */
    PyObject *unparsed;      /* exporter.event._UNPARSED */
    PyObject *empty;         /* "" */
    PyObject *no_rules;      /* () */
    PyObject *zero;          /* 0 */
} State;

static State S;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The offset of a writable object slot ``name`` of ``type`` (a member
 * descriptor of type T_OBJECT_EX), or -1 with an exception set. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != Py_T_OBJECT_EX || (member->flags & Py_READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot",
                     type->tp_name, name);
        return -1;
    }
    return member->offset;
}

static int
check_type(PyObject *obj, const char *what)
{
    if (!PyType_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a class", what);
        return -1;
    }
    return 0;
}

/* setup(AuditEvent, _Fast, _User, _Ref, _Status, decode, decode_errors,
 *       api_time, InvalidEvent, user_kind, user_kinds, unparsed) */
static PyObject *
setup(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "setup() takes 12 arguments");
        return NULL;
    }
    for (int i = 0; i < 5; i++) {
        if (check_type(args[i], "the first five arguments") < 0)
            return NULL;
    }
    if (!PyDict_CheckExact(args[10])) {
        PyErr_SetString(PyExc_TypeError, "user_kinds must be a dict");
        return NULL;
    }
    PyTypeObject *event_type = (PyTypeObject *)args[0];
    /* every slot of AuditEvent is one this module writes, and no other */
    PyObject *slots = PyObject_GetAttrString(args[0], "__slots__");
    if (slots == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Size(slots);
    Py_DECREF(slots);
    if (count != E_COUNT) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError,
                         "AuditEvent has %zd slots, the fast path writes %d",
                         count, E_COUNT);
        return NULL;
    }
    State s = {0};
    for (int i = 0; i < E_COUNT; i++) {
        if ((s.event_off[i] = slot_offset(event_type, event_slots[i])) < 0)
            return NULL;
    }
    for (int i = 0; i < F_COUNT; i++) {
        if ((s.fast_off[i] = slot_offset((PyTypeObject *)args[1], fast_fields[i])) < 0)
            return NULL;
    }
    for (int i = 0; i < R_COUNT; i++) {
        if ((s.ref_off[i] = slot_offset((PyTypeObject *)args[3], ref_fields[i])) < 0)
            return NULL;
    }
    if ((s.username_off = slot_offset((PyTypeObject *)args[2], "username")) < 0)
        return NULL;
    if ((s.code_off = slot_offset((PyTypeObject *)args[4], "code")) < 0)
        return NULL;
    /* set up once per process: a later call is checked as above, and then
     * leaves the first one's state (and takes no references) */
    if (S.ready)
        Py_RETURN_NONE;
    s.empty = PyUnicode_FromStringAndSize("", 0);
    s.no_rules = PyTuple_New(0);
    s.zero = PyLong_FromLong(0);
    if (s.empty == NULL || s.no_rules == NULL || s.zero == NULL) {
        Py_XDECREF(s.empty);
        Py_XDECREF(s.no_rules);
        Py_XDECREF(s.zero);
        return NULL;
    }
    s.event_type = (PyTypeObject *)Py_NewRef(args[0]);
    s.fast_type = (PyTypeObject *)Py_NewRef(args[1]);
    s.user_type = (PyTypeObject *)Py_NewRef(args[2]);
    s.ref_type = (PyTypeObject *)Py_NewRef(args[3]);
    s.status_type = (PyTypeObject *)Py_NewRef(args[4]);
    s.decode = Py_NewRef(args[5]);
    s.decode_errors = Py_NewRef(args[6]);
    s.api_time = Py_NewRef(args[7]);
    s.invalid = Py_NewRef(args[8]);
    s.user_kind = Py_NewRef(args[9]);
    s.user_kinds = Py_NewRef(args[10]);
    s.unparsed = Py_NewRef(args[11]);
    s.ready = 1;
    S = s;
    Py_RETURN_NONE;
}

static int
two_digits(const unsigned char *p, int *out)
{
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
        return 0;
    *out = (p[0] - '0') * 10 + (p[1] - '0');
    return 1;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
 * days_from_civil). */
static long long
days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The API server's own form, "2024-05-01T10:00:00.123456Z", of a valid
 * date and time: its epoch seconds as parse_time computes them (the
 * second's value, exact, plus the microseconds times 1e-6). 0 when the
 * string is in another form or not a valid time: parse_time decides. */
static int
api_form(PyObject *s, double *out)
{
    if (!PyUnicode_IS_ASCII(s) || PyUnicode_GET_LENGTH(s) != 27)
        return 0;
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    if (p[4] != '-' || p[7] != '-' || p[10] != 'T' || p[13] != ':' ||
        p[16] != ':' || p[19] != '.' || p[26] != 'Z')
        return 0;
    int c, yy, mo, d, h, mi, se;
    if (!two_digits(p, &c) || !two_digits(p + 2, &yy) || !two_digits(p + 5, &mo) ||
        !two_digits(p + 8, &d) || !two_digits(p + 11, &h) ||
        !two_digits(p + 14, &mi) || !two_digits(p + 17, &se))
        return 0;
    long micros = 0;
    for (int i = 20; i < 26; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        micros = micros * 10 + (p[i] - '0');
    }
    int year = c * 100 + yy;
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (year < 1 || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 59)
        return 0;
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (d > month_days[mo - 1] + (mo == 2 && leap))
        return 0;
    long long seconds = days_from_civil(year, mo, d) * 86400LL + h * 3600LL + mi * 60LL + se;
    /* two roundings, as Python's float arithmetic does them (setup.py
     * builds this file with -ffp-contract=off: no fused multiply-add) */
    double fraction = (double)micros * 1e-6;
    *out = (double)seconds + fraction;
    return 1;
}

/* A timestamp's value: 1 with *out set, 0 when it is invalid (the general
 * decoder decides), -1 on another error. */
static int
timestamp(PyObject *s, double *out)
{
    if (api_form(s, out))
        return 1;
    PyObject *value = PyObject_CallOneArg(S.api_time, s);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(S.invalid)) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    *out = PyFloat_AsDouble(value);
    Py_DECREF(value);
    if (*out == -1.0 && PyErr_Occurred())
        return -1;
    return 1;
}

static int
all_ascii(const char *data, Py_ssize_t size)
{
    const unsigned char *p = (const unsigned char *)data;
    Py_ssize_t i = 0;
    for (; i + 8 <= size; i += 8) {
        unsigned long long word;
        memcpy(&word, p + i, 8);
        if (word & 0x8080808080808080ULL)
            return 0;
    }
    for (; i < size; i++) {
        if (p[i] & 0x80)
            return 0;
    }
    return 1;
}

static inline void
put(PyObject *ev, int slot, PyObject *value)
{
    /* a fresh event: every slot is empty */
    SLOT(ev, S.event_off[slot]) = Py_NewRef(value);
}

static inline void
put_new(PyObject *ev, int slot, PyObject *value)
{
    SLOT(ev, S.event_off[slot]) = value; /* steals the reference */
}

/* The event in ``line`` (bytes), None when the general decoder must
 * decide, NULL on an error. ``ascii``: 1 when the caller knows the line is
 * ASCII, 0 when it knows it is not, -1 to find out. */
static PyObject *
event_of(PyObject *line, int ascii)
{
    PyObject *f = PyObject_CallOneArg(S.decode, line);
    if (f == NULL) {
        if (PyErr_ExceptionMatches(S.decode_errors)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        return NULL;
    }
    PyObject *ev = NULL;
    if (!Py_IS_TYPE(f, S.fast_type))
        goto none;
    if (ascii < 0)
        ascii = all_ascii(PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
    if (!ascii) {
        /* msgspec does not check the UTF-8 of the values it skips */
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(line),
                                              PyBytes_GET_SIZE(line), NULL);
        if (text == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                goto none;
            }
            goto error;
        }
        Py_DECREF(text);
    }
#define FIELD(i) SLOT(f, S.fast_off[i])
    for (int i = 0; i < F_COUNT; i++) {
        if (FIELD(i) == NULL)
            goto none; /* not decoded as expected: let the general path say */
    }
    PyObject *received_at = FIELD(F_RECEIVED);
    PyObject *stage_at = FIELD(F_STAGE_AT);
    if (!PyUnicode_GET_LENGTH(FIELD(F_KIND)) || !PyUnicode_GET_LENGTH(FIELD(F_API_VERSION)) ||
        !PyUnicode_GET_LENGTH(received_at) || !PyUnicode_GET_LENGTH(stage_at))
        goto none;
    double received, stage_ts;
    int ok = timestamp(received_at, &received);
    if (ok <= 0)
        goto end;
    int same = PyObject_RichCompareBool(stage_at, received_at, Py_EQ);
    if (same < 0)
        goto error;
    if (same)
        stage_ts = received;
    else if ((ok = timestamp(stage_at, &stage_ts)) <= 0)
        goto end;

    PyObject *user = FIELD(F_USER);
    PyObject *username = S.empty;
    if (user != Py_None) {
        if (!Py_IS_TYPE(user, S.user_type) || SLOT(user, S.username_off) == NULL)
            goto none;
        username = SLOT(user, S.username_off);
    }
    PyObject *kind = PyDict_GetItemWithError(S.user_kinds, username);
    if (kind != NULL) {
        Py_INCREF(kind);
    }
    else {
        if (PyErr_Occurred())
            goto error;
        kind = PyObject_CallOneArg(S.user_kind, username);
        if (kind == NULL)
            goto error;
    }
    PyObject *imp = FIELD(F_IMPERSONATED_USER);
    PyObject *impersonated = S.empty;
    if (imp != Py_None) {
        if (!Py_IS_TYPE(imp, S.user_type) || SLOT(imp, S.username_off) == NULL) {
            Py_DECREF(kind);
            goto none;
        }
        impersonated = SLOT(imp, S.username_off);
    }
    PyObject *ref = FIELD(F_OBJECT_REF);
    PyObject *refs[R_COUNT];
    for (int i = 0; i < R_COUNT; i++) {
        refs[i] = S.empty;
    }
    if (ref != Py_None) {
        if (!Py_IS_TYPE(ref, S.ref_type)) {
            Py_DECREF(kind);
            goto none;
        }
        for (int i = 0; i < R_COUNT; i++) {
            if ((refs[i] = SLOT(ref, S.ref_off[i])) == NULL) {
                Py_DECREF(kind);
                goto none;
            }
        }
    }
    PyObject *status = FIELD(F_RESPONSE_STATUS);
    PyObject *code = S.zero;
    if (status != Py_None) {
        if (!Py_IS_TYPE(status, S.status_type) || SLOT(status, S.code_off) == NULL) {
            Py_DECREF(kind);
            goto none;
        }
        code = SLOT(status, S.code_off);
    }
    PyObject *ips = FIELD(F_SOURCE_IPS);
    PyObject *source_ip = S.empty;
    if (ips != Py_None) {
        if (!PyList_CheckExact(ips)) {
            Py_DECREF(kind);
            goto none;
        }
        Py_ssize_t n = PyList_GET_SIZE(ips);
        if (n > 0)
            source_ip = PyList_GET_ITEM(ips, n - 1);
    }
    int has_body = PyObject_IsTrue(FIELD(F_REQUEST_OBJECT));
    if (has_body == 0)
        has_body = PyObject_IsTrue(FIELD(F_RESPONSE_OBJECT));
    if (has_body < 0) {
        Py_DECREF(kind);
        goto error;
    }
    PyObject *annotations = FIELD(F_ANNOTATIONS);
    PyObject *received_obj = PyFloat_FromDouble(received);
    PyObject *stage_ts_obj = PyFloat_FromDouble(stage_ts);
    if (annotations == Py_None || (PyDict_Check(annotations) && PyDict_GET_SIZE(annotations) == 0))
        annotations = PyDict_New();
    else
        Py_INCREF(annotations);
    ev = S.event_type->tp_alloc(S.event_type, 0);
    if (ev == NULL || received_obj == NULL || stage_ts_obj == NULL || annotations == NULL) {
        Py_DECREF(kind);
        Py_XDECREF(received_obj);
        Py_XDECREF(stage_ts_obj);
        Py_XDECREF(annotations);
        goto error;
    }
    put(ev, E_OBJ, Py_None);
    put(ev, E_REQUEST, S.unparsed);
    put(ev, E_REQUEST_RAW, FIELD(F_REQUEST_OBJECT));
    put(ev, E_RAW, line);
    put(ev, E_RULES, S.no_rules);
    put(ev, E_SEVERITY, S.empty);
    put(ev, E_HAS_BODY, has_body ? Py_True : Py_False);
    put(ev, E_AUDIT_ID, FIELD(F_AUDIT_ID));
    put(ev, E_STAGE, FIELD(F_STAGE));
    put(ev, E_VERB, FIELD(F_VERB));
    put(ev, E_REQUEST_URI, FIELD(F_REQUEST_URI));
    put(ev, E_USER_AGENT, FIELD(F_USER_AGENT));
    put(ev, E_USERNAME, username);
    put_new(ev, E_USER_KIND, kind);
    put(ev, E_IMPERSONATED_USER, impersonated);
    put(ev, E_SOURCE_IP, source_ip);
    put(ev, E_RESOURCE, refs[R_RESOURCE]);
    put(ev, E_SUBRESOURCE, refs[R_SUBRESOURCE]);
    put(ev, E_NAMESPACE, refs[R_NAMESPACE]);
    put(ev, E_NAME, refs[R_NAME]);
    put(ev, E_API_GROUP, refs[R_API_GROUP]);
    put(ev, E_CODE, code);
    put_new(ev, E_ANNOTATIONS, annotations);
    put_new(ev, E_RECEIVED_TS, received_obj);
    put_new(ev, E_STAGE_TS, stage_ts_obj);
    put(ev, E_STAGE_TIME, stage_at);
    put(ev, E_LEVEL, FIELD(F_LEVEL));
#undef FIELD
    Py_DECREF(f);
    return ev;

end:
    if (ok < 0)
        goto error;
none:
    Py_DECREF(f);
    Py_RETURN_NONE;
error:
    Py_DECREF(f);
    Py_XDECREF(ev);
    return NULL;
}

/* contains_any(data, needles): True when one of the byte strings in the
 * tuple ``needles`` occurs in ``data`` (bytes): glibc's memmem, which
 * beats Python's search on needles whose last byte is common. */
static PyObject *
contains_any(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "contains_any(data: bytes, needles: tuple[bytes, ...])");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t count = PyTuple_GET_SIZE(args[1]);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *needle = PyTuple_GET_ITEM(args[1], i);
        if (!PyBytes_Check(needle)) {
            PyErr_SetString(PyExc_TypeError, "needles must be bytes");
            return NULL;
        }
        if (memmem(data, (size_t)size, PyBytes_AS_STRING(needle),
                   (size_t)PyBytes_GET_SIZE(needle)) != NULL)
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* The range [start, end) of a bytes object from a call's optional
 * arguments ``start`` and ``end`` (default: the whole), clamped as slices
 * clamp them; 0, or -1 with an exception set. */
static int
byte_range(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t size, Py_ssize_t *start,
           Py_ssize_t *end)
{
    *start = 0;
    *end = size;
    if (nargs > 1 && (*start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError)) == -1 &&
        PyErr_Occurred())
        return -1;
    if (nargs > 2 && (*end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError)) == -1 &&
        PyErr_Occurred())
        return -1;
    if (*start < 0 || *end < 0) {
        PyErr_SetString(PyExc_ValueError, "start and end must not be negative");
        return -1;
    }
    if (*end > size)
        *end = size;
    if (*start > *end)
        *start = *end;
    return 0;
}

/* split_newlines(data, start=0, end=len(data)): data[start:end].split(b"\n")
 * without copying the range first, finding the newlines with memchr:
 * CPython's split on one byte compares byte by byte, which was a tenth of
 * replay's work on lines of a few kilobytes. */
static PyObject *
split_newlines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "split_newlines(data: bytes, start=0, end=len(data))");
        return NULL;
    }
    Py_ssize_t start, stop_at;
    if (byte_range(args, nargs, PyBytes_GET_SIZE(args[0]), &start, &stop_at) < 0)
        return NULL;
    const char *p = PyBytes_AS_STRING(args[0]) + start;
    const char *end = PyBytes_AS_STRING(args[0]) + stop_at;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (;;) {
        const char *newline = memchr(p, '\n', (size_t)(end - p));
        const char *stop = newline != NULL ? newline : end;
        PyObject *line = PyBytes_FromStringAndSize(p, stop - p);
        if (line == NULL || PyList_Append(out, line) < 0) {
            Py_XDECREF(line);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(line);
        if (newline == NULL)
            return out;
        p = newline + 1;
    }
}

/* ascii_cr(data, start=0, end=len(data)): (whether data[start:end] is
 * ASCII, whether it holds a carriage return), without copying the range. */
static PyObject *
ascii_cr(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "ascii_cr(data: bytes, start=0, end=len(data))");
        return NULL;
    }
    Py_ssize_t start, end;
    if (byte_range(args, nargs, PyBytes_GET_SIZE(args[0]), &start, &end) < 0)
        return NULL;
    const char *p = PyBytes_AS_STRING(args[0]) + start;
    int ascii = all_ascii(p, end - start);
    int cr = memchr(p, '\r', (size_t)(end - start)) != NULL;
    return Py_BuildValue("(OO)", ascii ? Py_True : Py_False, cr ? Py_True : Py_False);
}

/* The slot of an event of exporter.event's AuditEvent (after setup()), or
 * the attribute of another object: a new reference, or NULL with an
 * exception set. */
static PyObject *
attribute(PyObject *ev, int slot, PyObject *name)
{
    if (S.ready && Py_TYPE(ev) == S.event_type) {
        PyObject *value = SLOT(ev, S.event_off[slot]);
        if (value != NULL)
            return Py_NewRef(value);
    }
    return PyObject_GetAttr(ev, name);
}

/* hash((a, b, c)) as CPython's tuple hash computes it (xxHash's rounds on
 * the items' hashes, Objects/tupleobject.c), without making the tuple.
 * exporter.accel checks it against hash() before it uses it. */
#if SIZEOF_VOID_P > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static Py_hash_t
hash_of_three(PyObject *const items[3])
{
    Py_uhash_t acc = XXPRIME_5;
    for (int i = 0; i < 3; i++) {
        Py_uhash_t lane = (Py_uhash_t)PyObject_Hash(items[i]);
        if (lane == (Py_uhash_t)-1 && PyErr_Occurred())
            return -1;
        acc += lane * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += (Py_uhash_t)3 ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return (Py_hash_t)acc;
}

/* key_hashes(events): the bytes of an array('q') of each event's
 * hash((audit_id, stage, stage_ts)), the dedupe key's hash (see
 * exporter.sources.replay_jobs.HashedDeduper). */
static PyObject *
key_hashes(PyObject *module, PyObject *events_arg)
{
    static PyObject *names[3];
    if (names[0] == NULL) {
        const char *spelled[3] = {"audit_id", "stage", "stage_ts"};
        for (int i = 0; i < 3; i++) {
            if ((names[i] = PyUnicode_InternFromString(spelled[i])) == NULL)
                return NULL;
        }
    }
    PyObject *events = PySequence_Fast(events_arg, "key_hashes() wants a sequence of events");
    if (events == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(events);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(long long));
    if (out == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    long long *hashes = (long long *)PyBytes_AS_STRING(out);
    static const int slots[3] = {E_AUDIT_ID, E_STAGE, E_STAGE_TS};
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *ev = Py_NewRef(PySequence_Fast_GET_ITEM(events, i));
        PyObject *items[3] = {NULL, NULL, NULL};
        Py_hash_t h = -1;
        int k = 0;
        for (; k < 3; k++) {
            if ((items[k] = attribute(ev, slots[k], names[k])) == NULL)
                break;
        }
        if (k == 3)
            h = hash_of_three(items);
        for (int j = 0; j < k; j++)
            Py_DECREF(items[j]);
        Py_DECREF(ev);
        if (h == -1 && PyErr_Occurred()) {
            Py_DECREF(out);
            Py_DECREF(events);
            return NULL;
        }
        hashes[i] = (long long)h;
    }
    Py_DECREF(events);
    return out;
}

/* ascii=None, True or False as event_of wants it: -1, 1 or 0 (-2 on an error) */
static int
ascii_arg(PyObject *value)
{
    if (value == Py_None)
        return -1;
    int truth = PyObject_IsTrue(value);
    return truth < 0 ? -2 : truth;
}

static int
ready(void)
{
    if (!S.ready) {
        PyErr_SetString(PyExc_RuntimeError, "exporter._speedups.setup() was not called");
        return 0;
    }
    return 1;
}

/* fast_event(line, ascii=None): exporter.event._fast_event in C */
static PyObject *
fast_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "fast_event(line, ascii=None)");
        return NULL;
    }
    if (!ready())
        return NULL;
    if (!PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "fast_event() wants bytes");
        return NULL;
    }
    int ascii = nargs == 2 ? ascii_arg(args[1]) : -1;
    if (ascii == -2)
        return NULL;
    return event_of(args[0], ascii);
}

/* fast_lines(lines, start, ascii, cr, within, limit, out, room):
 * exporter.event._fast_lines in C. From lines[start] on, the events of the
 * lines the fast path reads are appended to ``out``, until a line it does
 * not read (an empty one, one that is not an object, too long, or one it
 * hands to the general decoder) or ``room`` events; returns the position
 * of the first line not appended. */
static PyObject *
fast_lines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyList_Check(args[0]) || !PyList_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                        "fast_lines(lines: list, start, ascii, cr, within, limit, out: list, room)");
        return NULL;
    }
    if (!ready())
        return NULL;
    PyObject *lines = args[0];
    PyObject *out = args[6];
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    Py_ssize_t room = PyLong_AsSsize_t(args[7]);
    if ((start == -1 || limit == -1 || room == -1) && PyErr_Occurred())
        return NULL;
    int ascii = ascii_arg(args[2]);
    int cr = PyObject_IsTrue(args[3]);
    int within = PyObject_IsTrue(args[4]);
    if (ascii == -2 || cr < 0 || within < 0)
        return NULL;
    Py_ssize_t appended = 0;
    Py_ssize_t k = start < 0 ? 0 : start;
    for (; k < PyList_GET_SIZE(lines); k++) {
        if (appended >= room)
            break;
        PyObject *line = PyList_GET_ITEM(lines, k);
        if (!PyBytes_CheckExact(line))
            break;
        const char *data = PyBytes_AS_STRING(line);
        Py_ssize_t size = PyBytes_GET_SIZE(line);
        if (size == 0 || data[0] != '{' || (!within && size > limit))
            break;
        PyObject *ev;
        Py_ssize_t end = size;
        while (cr && end > 0 && data[end - 1] == '\r')
            end--; /* line.rstrip(b"\r") */
        if (end < size) {
            PyObject *stripped = PyBytes_FromStringAndSize(data, end);
            if (stripped == NULL)
                return NULL;
            ev = event_of(stripped, ascii);
            Py_DECREF(stripped);
        }
        else {
            /* held while Python code may run (a helper the decode calls
             * back), which could change the list */
            Py_INCREF(line);
            ev = event_of(line, ascii);
            Py_DECREF(line);
        }
        if (ev == NULL)
            return NULL;
        if (ev == Py_None) {
            Py_DECREF(ev);
            break;
        }
        int failed = PyList_Append(out, ev);
        Py_DECREF(ev);
        if (failed < 0)
            return NULL;
        appended++;
    }
    return PyLong_FromSsize_t(k);
}

static const int key_slots[] = {E_STAGE, E_VERB, E_RESOURCE, E_SUBRESOURCE, E_USER_KIND,
                                E_CODE, E_IMPERSONATED_USER, E_ANNOTATIONS, E_USERNAME,
                                E_USER_AGENT, E_SOURCE_IP};

/* One event's index key (see index_keys), NULL on an error. */
static PyObject *
key_of(PyObject *ev, PyObject *triples, PyObject *principal_class, PyObject *annotation_class,
       PyObject *common, int all_annotations, PyObject *one)
{
    int whole = Py_IS_TYPE(ev, S.event_type);
    for (size_t r = 0; whole && r < sizeof(key_slots) / sizeof(key_slots[0]); r++) {
        if (SLOT(ev, S.event_off[key_slots[r]]) == NULL)
            whole = 0;
    }
    if (!whole)
        return PyObject_CallOneArg(one, ev);
#define EV(slot) SLOT(ev, S.event_off[slot])
    /* the principal's class */
    PyObject *triple = PyTuple_Pack(3, EV(E_USERNAME), EV(E_USER_AGENT), EV(E_SOURCE_IP));
    if (triple == NULL)
        return NULL;
    PyObject *who = PyDict_GetItemWithError(triples, triple);
    if (who != NULL)
        Py_INCREF(who);
    else if (!PyErr_Occurred())
        who = PyObject_CallOneArg(principal_class, triple);
    Py_DECREF(triple);
    if (who == NULL)
        return NULL;
    /* the annotations' class; the slots are read again after each call
     * into Python, which holds the event (its caller's reference) */
    PyObject *ann = Py_NewRef(EV(E_ANNOTATIONS));
    int plain = 0; /* every key common */
    if (!all_annotations) {
        if (PyDict_Check(ann)) {
            plain = 1;
            Py_ssize_t pos = 0;
            PyObject *name;
            while (plain == 1 && PyDict_Next(ann, &pos, &name, NULL))
                plain = PySet_Contains(common, name);
        }
        else {
            PyObject *holds = PyObject_CallMethod(common, "issuperset", "O", ann);
            plain = holds == NULL ? -1 : PyObject_IsTrue(holds);
            Py_XDECREF(holds);
        }
    }
    PyObject *cls = NULL;
    if (plain == 1)
        cls = Py_NewRef(S.zero);
    else if (plain == 0)
        cls = PyObject_CallOneArg(annotation_class, ann);
    Py_DECREF(ann);
    if (cls == NULL) {
        Py_DECREF(who);
        return NULL;
    }
    int impersonated = -1;
    PyObject *key = NULL;
    for (size_t r = 0; r < sizeof(key_slots) / sizeof(key_slots[0]); r++) {
        if (SLOT(ev, S.event_off[key_slots[r]]) == NULL) {
            PyErr_SetString(PyExc_AttributeError, "an event's slot was deleted");
            goto done;
        }
    }
    PyObject *imp = EV(E_IMPERSONATED_USER);
    impersonated = PyUnicode_CheckExact(imp) ? PyUnicode_GET_LENGTH(imp) != 0
                                             : PyObject_RichCompareBool(imp, S.empty, Py_NE);
    if (impersonated < 0)
        goto done;
    key = PyTuple_New(9);
    if (key == NULL)
        goto done;
    PyTuple_SET_ITEM(key, 0, Py_NewRef(EV(E_STAGE)));
    PyTuple_SET_ITEM(key, 1, Py_NewRef(EV(E_VERB)));
    PyTuple_SET_ITEM(key, 2, Py_NewRef(EV(E_RESOURCE)));
    PyTuple_SET_ITEM(key, 3, Py_NewRef(EV(E_SUBRESOURCE)));
    PyTuple_SET_ITEM(key, 4, Py_NewRef(EV(E_USER_KIND)));
    PyTuple_SET_ITEM(key, 5, Py_NewRef(EV(E_CODE)));
    PyTuple_SET_ITEM(key, 6, Py_NewRef(impersonated ? Py_True : Py_False));
    PyTuple_SET_ITEM(key, 7, cls);
    PyTuple_SET_ITEM(key, 8, who);
    return key;
#undef EV
done:
    Py_DECREF(cls);
    Py_DECREF(who);
    return NULL;
}

/* index_keys(events, triples, principal_class, annotation_class, common,
 *            all_annotations, one): exporter.detect.engine.py_index_keys in
 * C, the detector's index key of each event of a batch:
 *   (stage, verb, resource, subresource, user_kind, code,
 *    impersonated_user != "", annotations' class or 0, principal's class)
 * the principal's class from the dict ``triples`` when it holds the
 * (username, user_agent, source_ip) triple, else principal_class(triple);
 * the annotations' class 0 when ``all_annotations`` is false and every key
 * is in ``common``, else annotation_class(annotations). An event that is
 * not an AuditEvent gets one(event). */
static PyObject *
index_keys(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7 || !PyDict_Check(args[1]) || !PyAnySet_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "index_keys(events, triples: dict, principal_class, annotation_class, "
                        "common: frozenset, all_annotations, one)");
        return NULL;
    }
    if (!ready())
        return NULL;
    int all_annotations = PyObject_IsTrue(args[5]);
    if (all_annotations < 0)
        return NULL;
    PyObject *events = PySequence_Fast(args[0], "index_keys() wants a sequence of events");
    if (events == NULL)
        return NULL;
    PyObject *keys = PyList_New(0);
    if (keys == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(events); i++) {
        /* held: the Python code key_of may call could change the list */
        PyObject *ev = Py_NewRef(PySequence_Fast_GET_ITEM(events, i));
        PyObject *key = key_of(ev, args[1], args[2], args[3], args[4], all_annotations, args[6]);
        Py_DECREF(ev);
        if (key == NULL || PyList_Append(keys, key) < 0) {
            Py_XDECREF(key);
            Py_DECREF(keys);
            Py_DECREF(events);
            return NULL;
        }
        Py_DECREF(key);
    }
    Py_DECREF(events);
    return keys;
}

/* scan_hits(events, keys, index, missing): for each event, the tests of
 * index[key] (pairs (test, position); missing(key) computes and remembers
 * the pairs of a key not in the dict) that hold for it, a test that raises
 * an Exception counting as one that holds, given as ~position:
 * [(i, (position, ...)), ...] for the events with at least one
 * (exporter.accel.py_scan_hits in C, the loop of Detector.scan). */
static PyObject *
scan_hits(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "scan_hits(events, keys, index: dict, missing)");
        return NULL;
    }
    PyObject *events = PySequence_Fast(args[0], "scan_hits() wants a sequence of events");
    if (events == NULL)
        return NULL;
    PyObject *keys = PySequence_Fast(args[1], "scan_hits() wants a sequence of keys");
    if (keys == NULL) {
        Py_DECREF(events);
        return NULL;
    }
    PyObject *found = NULL;
    if (PySequence_Fast_GET_SIZE(keys) != PySequence_Fast_GET_SIZE(events)) {
        PyErr_SetString(PyExc_ValueError, "scan_hits(): as many keys as events");
        goto done;
    }
    if ((found = PyList_New(0)) == NULL)
        goto done;
    PyObject *hits[64];
    int raised[64];
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(events); i++) {
        /* held: the tests are Python code, which could change the lists */
        PyObject *ev = Py_NewRef(PySequence_Fast_GET_ITEM(events, i));
        PyObject *key = Py_NewRef(PySequence_Fast_GET_ITEM(keys, i));
        PyObject *cands = PyDict_GetItemWithError(args[2], key);
        if (cands != NULL)
            Py_INCREF(cands);
        else if (!PyErr_Occurred())
            cands = PyObject_CallOneArg(args[3], key);
        Py_DECREF(key);
        if (cands == NULL || !PyTuple_Check(cands)) {
            if (cands != NULL)
                PyErr_SetString(PyExc_TypeError, "scan_hits(): candidates must be a tuple");
            Py_XDECREF(cands);
            Py_DECREF(ev);
            Py_CLEAR(found);
            goto done;
        }
        Py_ssize_t n = 0, count = PyTuple_GET_SIZE(cands);
        int failed = 0;
        for (Py_ssize_t k = 0; k < count && !failed; k++) {
            PyObject *pair = PyTuple_GET_ITEM(cands, k);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "scan_hits(): a candidate is (test, position)");
                failed = 1;
                break;
            }
            PyObject *result = PyObject_CallOneArg(PyTuple_GET_ITEM(pair, 0), ev);
            int hit, raising = 0;
            if (result == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    failed = 1;
                    break;
                }
                PyErr_Clear(); /* the processor counts the failure */
                hit = 1;
                raising = 1;
            }
            else {
                hit = PyObject_IsTrue(result);
                Py_DECREF(result);
                if (hit < 0) {
                    failed = 1;
                    break;
                }
            }
            if (hit) {
                if (n == (Py_ssize_t)(sizeof hits / sizeof hits[0])) {
                    PyErr_SetString(PyExc_ValueError, "scan_hits(): too many rules for one key");
                    failed = 1;
                    break;
                }
                raised[n] = raising;
                hits[n++] = PyTuple_GET_ITEM(pair, 1);
            }
        }
        PyObject *entry = NULL;
        if (!failed && n > 0) {
            PyObject *positions = PyTuple_New(n);
            if (positions != NULL) {
                for (Py_ssize_t k = 0; k < n; k++) {
                    /* a test that raised: ~position */
                    PyObject *at = raised[k] ? PyNumber_Invert(hits[k]) : Py_NewRef(hits[k]);
                    if (at == NULL) {
                        Py_CLEAR(positions);
                        break;
                    }
                    PyTuple_SET_ITEM(positions, k, at);
                }
            }
            if (positions != NULL)
                entry = Py_BuildValue("(nN)", i, positions);
            if (entry == NULL || PyList_Append(found, entry) < 0)
                failed = 1;
            Py_XDECREF(entry);
        }
        Py_DECREF(cands); /* after the positions, which it holds, are taken */
        Py_DECREF(ev);
        if (failed) {
            Py_CLEAR(found);
            goto done;
        }
    }
done:
    Py_DECREF(events);
    Py_DECREF(keys);
    return found;
}

/* Sets of 64-bit hashes (the dedupe keys' hashes of replay --jobs) kept in
 * a bytearray: int64 words [used, has_zero, slot 0, slot 1, ...], a power
 * of two of slots, at most half of them used; 0 marks an empty slot (the
 * hash 0 is the has_zero flag). A lookup reads one slot, where a Python set
 * of ints reads a larger table and makes an int object for each hash; the
 * Python twins in exporter.accel hold the same hashes in a set. An empty
 * bytearray is an empty table. */
#define HT_HEADER 2

typedef struct {
    int64_t *words;  /* NULL: an empty table without slots */
    Py_ssize_t slots; /* a power of two, or 0 */
} hash_table;

static int
ht_view(PyObject *obj, hash_table *t)
{
    if (!PyByteArray_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "a hash table is a bytearray from new_hash_table()");
        return -1;
    }
    Py_ssize_t size = PyByteArray_GET_SIZE(obj);
    if (size == 0) {
        t->words = NULL;
        t->slots = 0;
        return 0;
    }
    Py_ssize_t slots = size / 8 - HT_HEADER;
    if (size % 8 != 0 || slots < 1 || (slots & (slots - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "not a hash table");
        return -1;
    }
    int64_t *words = (int64_t *)PyByteArray_AS_STRING(obj);
    if (words[0] < 0 || words[0] > slots + 1 || (words[1] != 0 && words[1] != 1)) {
        PyErr_SetString(PyExc_ValueError, "not a hash table");
        return -1;
    }
    t->words = words;
    t->slots = slots;
    return 0;
}

static inline size_t
ht_start(int64_t h, Py_ssize_t slots)
{
    uint64_t x = (uint64_t)h * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x ^ (x >> 32)) & (size_t)(slots - 1);
}

static int
ht_contains(const hash_table *t, int64_t h)
{
    if (t->words == NULL)
        return 0;
    if (h == 0)
        return t->words[1] != 0;
    const int64_t *slot = t->words + HT_HEADER;
    size_t mask = (size_t)(t->slots - 1);
    size_t i = ht_start(h, t->slots);
    /* at most every slot (only a table written by something else is full) */
    for (Py_ssize_t n = 0; n < t->slots && slot[i] != 0; n++, i = (i + 1) & mask)
        if (slot[i] == h)
            return 1;
    return 0;
}

/* Hashes looked up this many places ahead of the one being looked up have
 * their slots fetched meanwhile: the parent's window of a replay with jobs
 * is two tables of megabytes, where each lookup would otherwise wait for
 * memory in turn. */
#define HT_AHEAD 8

static inline void
ht_prefetch(const hash_table *t, int64_t h)
{
#if defined(__GNUC__)
    if (t->words != NULL)
        __builtin_prefetch(t->words + HT_HEADER + ht_start(h, t->slots));
#else
    (void)t;
    (void)h;
#endif
}

/* is h in one of the n tables? */
static inline int
ht_in_any(const hash_table *tables, int n, int64_t h)
{
    for (int k = 0; k < n; k++)
        if (ht_contains(&tables[k], h))
            return 1;
    return 0;
}

/* fetch the slots of the hash HT_AHEAD places after position i (of count)
 * in each of the n tables */
static inline void
ht_prefetch_ahead(const hash_table *tables, int n, const char *at, Py_ssize_t i,
                  Py_ssize_t count)
{
    if (i + HT_AHEAD >= count)
        return;
    int64_t h;
    memcpy(&h, at + (i + HT_AHEAD) * (Py_ssize_t)sizeof h, sizeof h);
    for (int k = 0; k < n; k++)
        ht_prefetch(&tables[k], h);
}

/* h, which is not in the table, into it (room was made); -1 when there is
 * no room after all (a table written by something else) */
static int
ht_add(hash_table *t, int64_t h)
{
    if (h == 0) {
        t->words[0]++;
        t->words[1] = 1;
        return 0;
    }
    int64_t *slot = t->words + HT_HEADER;
    size_t mask = (size_t)(t->slots - 1);
    size_t i = ht_start(h, t->slots);
    for (Py_ssize_t n = 0; n < t->slots; n++, i = (i + 1) & mask) {
        if (slot[i] == 0) {
            slot[i] = h;
            t->words[0]++;
            return 0;
        }
    }
    PyErr_SetString(PyExc_ValueError, "not a hash table (full)");
    return -1;
}

/* room in the table for ``more`` hashes */
static int
ht_reserve(PyObject *obj, hash_table *t, Py_ssize_t more)
{
    int64_t used = t->words != NULL ? t->words[0] : 0;
    if (more > PY_SSIZE_T_MAX / 64 || used > PY_SSIZE_T_MAX / 64 - more) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = (Py_ssize_t)used + more;
    if (t->words != NULL && need * 2 <= t->slots)
        return 0;
    Py_ssize_t slots = 16;
    while (slots < need * 2)
        slots *= 2;
    int64_t *words = PyMem_Calloc((size_t)(HT_HEADER + slots), sizeof(int64_t));
    if (words == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    hash_table grown = {words, slots};
    if (t->words != NULL) {
        words[1] = t->words[1];
        words[0] = t->words[1] != 0;
        for (Py_ssize_t i = 0; i < t->slots; i++)
            if (t->words[HT_HEADER + i] != 0 && ht_add(&grown, t->words[HT_HEADER + i]) < 0) {
                PyMem_Free(words);
                return -1;
            }
    }
    if (PyByteArray_Resize(obj, (HT_HEADER + slots) * (Py_ssize_t)sizeof(int64_t)) < 0) {
        PyMem_Free(words);
        return -1;
    }
    memcpy(PyByteArray_AS_STRING(obj), words, (size_t)(HT_HEADER + slots) * sizeof(int64_t));
    PyMem_Free(words);
    return ht_view(obj, t);
}

/* the hashes of a buffer of int64 (bytes, array('q'), ...) */
static int
hashes_view(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % (Py_ssize_t)sizeof(int64_t) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "hashes: a whole number of 8-byte integers");
        return -1;
    }
    return 0;
}

static int
tables_view(PyObject *tuple, hash_table *out, Py_ssize_t max)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) > max) {
        PyErr_SetString(PyExc_TypeError, "tables: a tuple of at most 4 hash tables");
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++)
        if (ht_view(PyTuple_GET_ITEM(tuple, k), &out[k]) < 0)
            return -1;
    return (int)PyTuple_GET_SIZE(tuple);
}

/* seen_before(table, hashes, others): the positions of the hashes that are
 * in ``table`` or in one of ``others`` (a tuple of tables) or came earlier
 * in ``hashes``; the others go into ``table``, which grows as needed. */
static PyObject *
seen_before(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "seen_before(table, hashes, others)");
        return NULL;
    }
    /* tables[0]: the table; then the others */
    hash_table tables[5];
    int n = tables_view(args[2], tables + 1, 4);
    if (n < 0 || ht_view(args[0], &tables[0]) < 0)
        return NULL;
    n++;
    Py_buffer view;
    if (hashes_view(args[1], &view) < 0)
        return NULL;
    PyObject *found = NULL;
    Py_ssize_t count = view.len / (Py_ssize_t)sizeof(int64_t);
    if (ht_reserve(args[0], &tables[0], count) < 0)
        goto done;
    /* the others again: one may be the table, moved as it grew */
    if (tables_view(args[2], tables + 1, 4) < 0 || (found = PyList_New(0)) == NULL)
        goto done;
    const char *at = view.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        ht_prefetch_ahead(tables, n, at, i, count);
        int64_t h;
        memcpy(&h, at + i * (Py_ssize_t)sizeof h, sizeof h);
        if (!ht_in_any(tables, n, h)) {
            if (ht_add(&tables[0], h) < 0) {
                Py_CLEAR(found);
                goto done;
            }
            continue;
        }
        PyObject *position = PyLong_FromSsize_t(i);
        if (position == NULL || PyList_Append(found, position) < 0) {
            Py_XDECREF(position);
            Py_CLEAR(found);
            goto done;
        }
        Py_DECREF(position);
    }
done:
    PyBuffer_Release(&view);
    return found;
}

/* hashes_in(tables, hashes): the positions of the hashes that are in one
 * of ``tables``; changes nothing. */
static PyObject *
hashes_in(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hashes_in(tables, hashes)");
        return NULL;
    }
    hash_table tables[4];
    int n = tables_view(args[0], tables, 4);
    if (n < 0)
        return NULL;
    Py_buffer view;
    if (hashes_view(args[1], &view) < 0)
        return NULL;
    PyObject *found = PyList_New(0);
    Py_ssize_t count = view.len / (Py_ssize_t)sizeof(int64_t);
    const char *at = view.buf;
    for (Py_ssize_t i = 0; i < count && found != NULL; i++) {
        ht_prefetch_ahead(tables, n, at, i, count);
        int64_t h;
        memcpy(&h, at + i * (Py_ssize_t)sizeof h, sizeof h);
        if (!ht_in_any(tables, n, h))
            continue;
        PyObject *position = PyLong_FromSsize_t(i);
        if (position == NULL || PyList_Append(found, position) < 0)
            Py_CLEAR(found);
        Py_XDECREF(position);
    }
    PyBuffer_Release(&view);
    return found;
}

/* table_reserve(table, n): room in the table for n more hashes (a table
 * that will take many at once grows only once) */
static PyObject *
table_reserve(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "table_reserve(table, n)");
        return NULL;
    }
    hash_table t;
    if (ht_view(args[0], &t) < 0)
        return NULL;
    Py_ssize_t more = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (more == -1 && PyErr_Occurred())
        return NULL;
    if (more < 0) {
        PyErr_SetString(PyExc_ValueError, "table_reserve: n < 0");
        return NULL;
    }
    if (ht_reserve(args[0], &t, more) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* table_len(table): the hashes in a table */
static PyObject *
table_len(PyObject *module, PyObject *obj)
{
    hash_table t;
    if (ht_view(obj, &t) < 0)
        return NULL;
    return PyLong_FromLongLong(t.words != NULL ? (long long)t.words[0] : 0);
}

/* table_hashes(table): the bytes of an array('q') of a table's hashes, in
 * no particular order */
static PyObject *
table_hashes(PyObject *module, PyObject *obj)
{
    hash_table t;
    if (ht_view(obj, &t) < 0)
        return NULL;
    Py_ssize_t used = t.words != NULL ? (Py_ssize_t)t.words[0] : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, used * (Py_ssize_t)sizeof(int64_t));
    if (out == NULL || used == 0)
        return out;
    int64_t *to = (int64_t *)PyBytes_AS_STRING(out);
    Py_ssize_t n = 0;
    if (t.words[1] != 0)
        to[n++] = 0;
    for (Py_ssize_t i = 0; i < t.slots && n < used; i++)
        if (t.words[HT_HEADER + i] != 0)
            to[n++] = t.words[HT_HEADER + i];
    if (n < used && _PyBytes_Resize(&out, n * (Py_ssize_t)sizeof(int64_t)) < 0)
        return NULL;
    return out;
}

static PyMethodDef methods[] = {
    {"index_keys", (PyCFunction)(void (*)(void))index_keys, METH_FASTCALL,
     "index_keys(events, triples, principal_class, annotation_class, common, all_annotations, "
     "one): the detector's index key of each event (exporter.detect.engine.py_index_keys in C)."},
    {"fast_lines", (PyCFunction)(void (*)(void))fast_lines, METH_FASTCALL,
     "fast_lines(lines, start, ascii, cr, within, limit, out, room): events of "
     "the lines from start on appended to out while the fast path reads them "
     "(exporter.event._fast_lines in C); the position of the first line not appended."},
    {"split_newlines", (PyCFunction)(void (*)(void))split_newlines, METH_FASTCALL,
     "split_newlines(data, start=0, end=len(data)): data[start:end].split(b'\\n'), "
     "faster on long lines and without copying the range."},
    {"ascii_cr", (PyCFunction)(void (*)(void))ascii_cr, METH_FASTCALL,
     "ascii_cr(data, start=0, end=len(data)): (is data[start:end] ASCII, does it "
     "hold a carriage return)."},
    {"scan_hits", (PyCFunction)(void (*)(void))scan_hits, METH_FASTCALL,
     "scan_hits(events, keys, index, missing): the positions of the tests that hold "
     "for each event (exporter.accel.py_scan_hits in C)."},
    {"key_hashes", (PyCFunction)key_hashes, METH_O,
     "key_hashes(events): the bytes of an array('q') of each event's "
     "hash((audit_id, stage, stage_ts))."},
    {"seen_before", (PyCFunction)(void (*)(void))seen_before, METH_FASTCALL,
     "seen_before(table, hashes, others): the positions of the hashes in table, in one of "
     "others or earlier in hashes; the rest go into table (exporter.accel.py_seen_before in C)."},
    {"hashes_in", (PyCFunction)(void (*)(void))hashes_in, METH_FASTCALL,
     "hashes_in(tables, hashes): the positions of the hashes in one of tables."},
    {"table_reserve", (PyCFunction)(void (*)(void))table_reserve, METH_FASTCALL,
     "table_reserve(table, n): room in table for n more hashes."},
    {"table_len", (PyCFunction)table_len, METH_O, "table_len(table): the hashes in a table."},
    {"table_hashes", (PyCFunction)table_hashes, METH_O,
     "table_hashes(table): the bytes of an array('q') of a table's hashes."},
    {"contains_any", (PyCFunction)(void (*)(void))contains_any, METH_FASTCALL,
     "contains_any(data, needles): does one of the needles occur in data?"},
    {"setup", (PyCFunction)(void (*)(void))setup, METH_FASTCALL,
     "Give the fast path the classes and helpers of exporter.event."},
    {"fast_event", (PyCFunction)(void (*)(void))fast_event, METH_FASTCALL,
     "fast_event(line, ascii=None): the AuditEvent in line, or None when the "
     "general decoder must decide (exporter.event._fast_event in C)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "exporter._speedups",
    "The decoder's fast path in C (see exporter.event._fast_event).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
