/*
 * vfiosim.supervisor._fastpath: the hot part of `vfiosim run`'s notification loop in C.
 *
 * Supervisor.serve (loop.py) answers each notification with SEND, waits with poll() on the
 * listener and its other fds, and RECVs the next one.  On the 2-vCPU test VM every Python
 * statement on that path costs 50-300 ns, and with SYNC_WAKE_UP (or one shared CPU) all of the
 * supervisor's work per call is on PROG's critical path.  Loop.run() does those system calls
 * with the GIL released once and serves the common call -- an ioctl on a model fd whose
 * thread, process and file the supervisor already knows -- itself: it looks the file up in the
 * supervisor's own caches and calls the model's ``obj.ioctl(proc, request, arg)`` under the
 * machine lock, exactly as Supervisor.sys_ioctl does.  Anything else (another system call, a
 * cache miss, a result that is a new file, a fd event) goes back to Python.
 *
 * Layouts come from <linux/seccomp.h>; request and syscall numbers are passed in from
 * uapi/seccomp.py.  The module is optional (setup.py): without it loop.py runs the same
 * sequence in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>

#define MAX_POLLFDS 256

/* Loop.run() results besides an event list. */
enum {
    RUN_NOTIF = 0,   /* a notification is in notif_buf for Python to serve */
    RUN_RESULT = 1,  /* the model returned a non-int (a new file): Loop.result, notif_buf */
    RUN_DIRTY = 2,   /* served; the reply is in resp_buf, unsent: device events are due */
};

typedef struct {
    PyObject_HEAD
    int listener;
    unsigned long send_req, recv_req;
    long ioctl_nr;          /* -1: serve nothing in C */
    PyObject *tgids;        /* dict tid -> tgid */
    PyObject *cache;        /* dict (tgid, fd) -> Installed */
    PyObject *procs;        /* dict tgid -> RemoteProcess */
    PyObject *arg;          /* the reused RemoteArg */
    PyObject *acquire, *release;  /* the machine lock's bound methods */
    PyObject *clock;        /* object with a bool ``dirty``, or None */
    PyObject *notif_buf, *resp_buf;  /* bytearrays shared with loop.py */
    PyObject *others;       /* tuple of fds polled after the listener */
    PyObject *result;       /* RUN_RESULT's model result */
    PyObject *s_obj, *s_ioctl, *s_mm, *s_value, *s_argsz, *s_dirty, *s_errno;
} Loop;

static int as_int(PyObject *o, int *out)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "fd does not fit in a C int");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static void *buf_ptr(PyObject *ba, Py_ssize_t need)
{
    if (!PyByteArray_CheckExact(ba) || PyByteArray_GET_SIZE(ba) < need) {
        PyErr_SetString(PyExc_ValueError, "buffer too small");
        return NULL;
    }
    return PyByteArray_AS_STRING(ba);
}

static void Loop_dealloc(Loop *self)
{
    Py_XDECREF(self->tgids);
    Py_XDECREF(self->cache);
    Py_XDECREF(self->procs);
    Py_XDECREF(self->arg);
    Py_XDECREF(self->acquire);
    Py_XDECREF(self->release);
    Py_XDECREF(self->clock);
    Py_XDECREF(self->notif_buf);
    Py_XDECREF(self->resp_buf);
    Py_XDECREF(self->others);
    Py_XDECREF(self->result);
    Py_XDECREF(self->s_obj);
    Py_XDECREF(self->s_ioctl);
    Py_XDECREF(self->s_mm);
    Py_XDECREF(self->s_value);
    Py_XDECREF(self->s_argsz);
    Py_XDECREF(self->s_dirty);
    Py_XDECREF(self->s_errno);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Loop_init(Loop *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"listener", "send_req", "recv_req", "ioctl_nr", "tgids", "cache",
                             "procs", "arg", "lock", "clock", "notif_buf", "resp_buf", NULL};
    PyObject *tgids, *cache, *procs, *arg, *lock, *clock, *notif_buf, *resp_buf;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ikklO!O!O!OOOO!O!", kwlist, &self->listener,
                                     &self->send_req, &self->recv_req, &self->ioctl_nr,
                                     &PyDict_Type, &tgids, &PyDict_Type, &cache,
                                     &PyDict_Type, &procs, &arg, &lock, &clock,
                                     &PyByteArray_Type, &notif_buf, &PyByteArray_Type,
                                     &resp_buf))
        return -1;
    if (PyByteArray_GET_SIZE(notif_buf) < (Py_ssize_t)sizeof(struct seccomp_notif) ||
        PyByteArray_GET_SIZE(resp_buf) < (Py_ssize_t)sizeof(struct seccomp_notif_resp)) {
        PyErr_SetString(PyExc_ValueError, "notif_buf or resp_buf too small");
        return -1;
    }
    PyObject *acquire = PyObject_GetAttrString(lock, "acquire");
    PyObject *release = acquire ? PyObject_GetAttrString(lock, "release") : NULL;
    if (release == NULL) {
        Py_XDECREF(acquire);
        return -1;
    }
    /* the fields own their references; a second __init__ replaces them */
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    Py_XSETREF(self->tgids, Py_NewRef(tgids));
    Py_XSETREF(self->cache, Py_NewRef(cache));
    Py_XSETREF(self->procs, Py_NewRef(procs));
    Py_XSETREF(self->arg, Py_NewRef(arg));
    Py_XSETREF(self->clock, Py_NewRef(clock));
    Py_XSETREF(self->notif_buf, Py_NewRef(notif_buf));
    Py_XSETREF(self->resp_buf, Py_NewRef(resp_buf));
    if (self->others == NULL && (self->others = PyTuple_New(0)) == NULL)
        return -1;
#define INTERN(f, s) if (self->f == NULL && (self->f = PyUnicode_InternFromString(s)) == NULL) \
        return -1
    INTERN(s_obj, "obj");
    INTERN(s_ioctl, "ioctl");
    INTERN(s_mm, "mm");
    INTERN(s_value, "value");
    INTERN(s_argsz, "argsz");
    INTERN(s_dirty, "dirty");
    INTERN(s_errno, "errno");
#undef INTERN
    return 0;
}

/* Loop() made without __init__ (Loop.__new__) has NULL fields: refuse to run it. */
static int initialised(Loop *self)
{
    if (self->notif_buf == NULL || self->s_errno == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Loop is not initialised");
        return 0;
    }
    return 1;
}

/* Fill resp_buf with a result (error 0) or an error (-errno). */
static void set_resp(Loop *self, __u64 id, __s64 val, __s32 error)
{
    struct seccomp_notif_resp *r = (struct seccomp_notif_resp *)PyByteArray_AS_STRING(self->resp_buf);
    r->id = id;
    r->val = val;
    r->error = error;
    r->flags = 0;
}

/*
 * Serve the ioctl in notif_buf if every lookup hits.  Returns 1 when served (reply in
 * resp_buf), 0 when Python must serve it (nothing was done), -1 with an exception set when
 * the model raised something other than OSError (the call happened: Python answers EIO), 2
 * when the model returned a non-int (stored in self->result).
 */
static int serve_ioctl(Loop *self, const struct seccomp_notif *n)
{
    PyObject *key = NULL, *tgid, *inst, *proc, *obj = NULL, *mm = NULL, *r = NULL;
    PyObject *cmd = NULL, *value = NULL, *tmp;
    int ret = 0;

    tmp = PyLong_FromUnsignedLong(n->pid);
    if (tmp == NULL)
        return -1;
    tgid = PyDict_GetItemWithError(self->tgids, tmp);  /* borrowed */
    Py_DECREF(tmp);
    if (tgid == NULL)
        return PyErr_Occurred() ? -1 : 0;
    tmp = PyLong_FromUnsignedLong((unsigned long)(n->data.args[0] & 0xFFFFFFFFu));
    if (tmp == NULL)
        return -1;
    key = PyTuple_Pack(2, tgid, tmp);
    Py_DECREF(tmp);
    if (key == NULL)
        return -1;
    inst = PyDict_GetItemWithError(self->cache, key);
    Py_DECREF(key);
    if (inst == NULL)
        return PyErr_Occurred() ? -1 : 0;
    proc = PyDict_GetItemWithError(self->procs, tgid);
    if (proc == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(inst);
    Py_INCREF(proc);
    obj = PyObject_GetAttr(inst, self->s_obj);
    mm = obj ? PyObject_GetAttr(proc, self->s_mm) : NULL;
    value = mm ? PyLong_FromUnsignedLongLong(n->data.args[2]) : NULL;
    cmd = value ? PyLong_FromUnsignedLong((unsigned long)(n->data.args[1] & 0xFFFFFFFFu)) : NULL;
    if (cmd == NULL || PyObject_SetAttr(self->arg, self->s_value, value) < 0 ||
        PyObject_SetAttr(self->arg, self->s_mm, mm) < 0 ||
        PyObject_SetAttr(self->arg, self->s_argsz, Py_None) < 0) {
        ret = -1;
        goto out;
    }
    tmp = PyObject_CallNoArgs(self->acquire);
    if (tmp == NULL) {
        ret = -1;
        goto out;
    }
    Py_DECREF(tmp);
    {
        PyObject *call_args[4] = {obj, proc, cmd, self->arg};
        r = PyObject_VectorcallMethod(self->s_ioctl, call_args, 4, NULL);
    }
    /* release the lock whatever happened, keeping the model's exception if any */
    {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        tmp = PyObject_CallNoArgs(self->release);
        if (tmp == NULL) {
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            ret = -1;
            goto out;
        }
        Py_DECREF(tmp);
        PyErr_Restore(et, ev, tb);
    }
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_OSError)) {
            ret = -1;
            goto out;
        }
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyErr_NormalizeException(&et, &ev, &tb);
        long err = 0;
        PyObject *e = ev ? PyObject_GetAttr(ev, self->s_errno) : NULL;
        if (e != NULL && PyLong_Check(e))
            err = PyLong_AsLong(e);
        Py_XDECREF(e);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        PyErr_Clear();
        if (err <= 0 || err > 4095)
            err = EIO;
        set_resp(self, n->id, 0, (__s32)-err);
        ret = 1;
    } else if (PyLong_Check(r)) {
        long long v = PyLong_AsLongLong(r);
        if (v == -1 && PyErr_Occurred()) {
            ret = -1;  /* out of range: a model bug, answered EIO by Python */
            goto out;
        }
        set_resp(self, n->id, v, 0);
        ret = 1;
    } else {
        Py_XSETREF(self->result, r);
        r = NULL;
        ret = 2;
    }
out:
    Py_XDECREF(r);
    Py_XDECREF(cmd);
    Py_XDECREF(value);
    Py_XDECREF(mm);
    Py_XDECREF(obj);
    Py_DECREF(proc);
    Py_DECREF(inst);
    return ret;
}

/*
 * run(reply, timeout_ms): if ``reply``, SEND resp_buf first (errors ignored: ENOENT means the
 * caller died or was interrupted).  Then loop: poll() the listener and ``others``; if anything
 * but the listener's POLLIN is pending return the poll() result (a list of (fd, revents), as
 * select.poll gives it; empty on timeout or EINTR); RECV into notif_buf (zeroed first), and
 * return -errno if that fails; serve the call if it is a known ioctl, and go round with its
 * reply; otherwise return RUN_NOTIF, RUN_RESULT or RUN_DIRTY (see above).  An exception from
 * the model (not OSError) propagates with the notification in notif_buf, unanswered.
 */
static PyObject *Loop_run(Loop *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct pollfd pfd[MAX_POLLFDS];
    int reply, timeout;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "run(reply, timeout_ms)");
        return NULL;
    }
    if (!initialised(self))
        return NULL;
    reply = PyObject_IsTrue(args[0]);
    if (reply < 0 || as_int(args[1], &timeout) < 0)
        return NULL;
    for (;;) {
        PyObject *others = self->others;
        Py_ssize_t nothers = PyTuple_GET_SIZE(others);
        if (nothers + 1 > MAX_POLLFDS) {
            PyErr_SetString(PyExc_ValueError, "too many fds to poll");
            return NULL;
        }
        pfd[0].fd = self->listener;
        pfd[0].events = POLLIN;
        for (Py_ssize_t i = 0; i < nothers; i++) {
            if (as_int(PyTuple_GET_ITEM(others, i), &pfd[i + 1].fd) < 0)
                return NULL;
            pfd[i + 1].events = POLLIN;
        }
        struct seccomp_notif *n = buf_ptr(self->notif_buf, sizeof(*n));
        void *resp = buf_ptr(self->resp_buf, sizeof(struct seccomp_notif_resp));
        if (n == NULL || resp == NULL)
            return NULL;
        int npoll, rc = 0, err = 0, recvd = 0;
        Py_BEGIN_ALLOW_THREADS
        if (reply)
            (void)ioctl(self->listener, self->send_req, resp);
        npoll = poll(pfd, (nfds_t)(nothers + 1), timeout);
        if (npoll < 0) {
            err = errno;
        } else if (npoll == 1 && (pfd[0].revents & POLLIN)) {
            memset(n, 0, sizeof(*n));
            rc = ioctl(self->listener, self->recv_req, n);
            err = rc < 0 ? errno : 0;
            recvd = 1;
        }
        Py_END_ALLOW_THREADS
        reply = 0;

        if (!recvd) {
            if (npoll < 0) {
                if (err != EINTR) {
                    errno = err;
                    return PyErr_SetFromErrno(PyExc_OSError);
                }
                if (PyErr_CheckSignals() < 0)
                    return NULL;
                npoll = 0;
            }
            PyObject *list = PyList_New(npoll);
            if (list == NULL)
                return NULL;
            for (Py_ssize_t i = 0, j = 0; i <= nothers && j < npoll; i++) {
                if (pfd[i].revents == 0)
                    continue;
                PyObject *item = Py_BuildValue("(ii)", pfd[i].fd, (int)pfd[i].revents);
                if (item == NULL) {
                    Py_DECREF(list);
                    return NULL;
                }
                PyList_SET_ITEM(list, j++, item);
            }
            return list;
        }
        if (rc < 0)
            return PyLong_FromLong(-err);
        if (n->data.nr != self->ioctl_nr)
            return PyLong_FromLong(RUN_NOTIF);
        int served = serve_ioctl(self, n);
        if (served < 0)
            return NULL;
        if (served == 0)
            return PyLong_FromLong(RUN_NOTIF);
        if (served == 2)
            return PyLong_FromLong(RUN_RESULT);
        if (self->clock != Py_None) {
            PyObject *d = PyObject_GetAttr(self->clock, self->s_dirty);
            if (d == NULL)
                return NULL;
            int dirty = PyObject_IsTrue(d);
            Py_DECREF(d);
            if (dirty < 0)
                return NULL;
            if (dirty)
                return PyLong_FromLong(RUN_DIRTY);
        }
        reply = 1;
    }
}

static PyObject *Loop_take_result(Loop *self, PyObject *unused)
{
    (void)unused;
    PyObject *r = self->result;
    self->result = NULL;
    if (r == NULL)
        Py_RETURN_NONE;
    return r;
}

static PyMethodDef Loop_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Loop_run, METH_FASTCALL,
     "run(reply, timeout_ms) -> list of (fd, revents) | -errno | RUN_NOTIF | RUN_RESULT | "
     "RUN_DIRTY"},
    {"take_result", (PyCFunction)Loop_take_result, METH_NOARGS,
     "The model's non-int result of the last RUN_RESULT (then None)."},
    {NULL, NULL, 0, NULL},
};

static int Loop_set_others(Loop *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || !PyTuple_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "others must be a tuple of fds");
        return -1;
    }
    Py_INCREF(value);
    Py_XSETREF(self->others, value);
    return 0;
}

static PyObject *Loop_get_others(Loop *self, void *closure)
{
    (void)closure;
    if (self->others == NULL)
        return PyTuple_New(0);
    Py_INCREF(self->others);
    return self->others;
}

static PyGetSetDef Loop_getset[] = {
    {"others", (getter)Loop_get_others, (setter)Loop_set_others,
     "tuple of fds polled for POLLIN after the listener", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vfiosim.supervisor._fastpath.Loop",
    .tp_basicsize = sizeof(Loop),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The notification loop's system calls and cached-ioctl dispatch (loop.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Loop_init,
    .tp_dealloc = (destructor)Loop_dealloc,
    .tp_methods = Loop_methods,
    .tp_getset = Loop_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vfiosim.supervisor._fastpath",
    .m_doc = "The hot part of vfiosim run's notification loop (see loop.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
    if (PyType_Ready(&LoopType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LoopType);
    if (PyModule_AddObject(m, "Loop", (PyObject *)&LoopType) < 0 ||
        PyModule_AddIntConstant(m, "RUN_NOTIF", RUN_NOTIF) < 0 ||
        PyModule_AddIntConstant(m, "RUN_RESULT", RUN_RESULT) < 0 ||
        PyModule_AddIntConstant(m, "RUN_DIRTY", RUN_DIRTY) < 0 ||
        PyModule_AddIntConstant(m, "NOTIF_SIZE", sizeof(struct seccomp_notif)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
