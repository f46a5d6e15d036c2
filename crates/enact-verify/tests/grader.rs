//! The Python grader against the real sandbox: honest code passes, every trick fails, and
//! failures are reported with the right status.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use common::{all, available, dir_with};
use enact_core::CheckStatus;
use enact_verify::{GradeLimits, PyCase, PyValue, PythonGrader};

fn cases() -> Vec<PyCase> {
    (0..4)
        .map(|i| PyCase {
            id: format!("case-{i}"),
            func: "add".into(),
            args: vec![PyValue::Int(i), PyValue::Int(10)],
            expected: PyValue::Int(i + 10),
        })
        .collect()
}

async fn grade(files: &[(&str, &str)]) -> Vec<(CheckStatus, String)> {
    let dir = dir_with(files);
    let grader = PythonGrader {
        limits: GradeLimits {
            per_case_wall: Duration::from_secs(3),
            ..GradeLimits::default()
        },
        ..PythonGrader::default()
    };
    let r = grader
        .grade(dir.path(), "solution", &cases())
        .await
        .unwrap();
    assert_eq!(r.checks.len(), 4, "one check per expected case");
    for (c, want) in r.checks.iter().zip(cases()) {
        assert_eq!(c.name, want.id, "checks come back in case order");
    }
    r.checks.into_iter().map(|c| (c.status, c.detail)).collect()
}

#[tokio::test]
async fn honest_code_passes() {
    if !available() {
        return;
    }
    let r = grade(&[("solution.py", "def add(a, b):\n    return a + b\n")]).await;
    assert!(all(&r, CheckStatus::Passed), "{r:?}");
}

#[tokio::test]
async fn exits_skips_and_crashes_never_pass() {
    if !available() {
        return;
    }
    let r = grade(&[("solution.py", "import sys\nsys.exit(0)\n")]).await;
    assert!(all(&r, CheckStatus::Missing), "sys.exit: {r:?}");
    let r = grade(&[("solution.py", "import os\nos._exit(0)\n")]).await;
    assert!(all(&r, CheckStatus::Missing), "os._exit: {r:?}");
    let r = grade(&[(
        "solution.py",
        "import unittest\ndef add(a, b):\n    raise unittest.SkipTest('skip')\n",
    )])
    .await;
    assert!(all(&r, CheckStatus::Failed), "SkipTest: {r:?}");
    let r = grade(&[("solution.py", "def add(a, b):\n    return 1 / 0\n")]).await;
    assert!(all(&r, CheckStatus::Failed), "exception: {r:?}");
    let r = grade(&[("other.py", "x = 1\n")]).await;
    assert!(all(&r, CheckStatus::Failed), "missing module: {r:?}");
}

#[tokio::test]
async fn timeouts_are_errors_measured_by_the_parent() {
    if !available() {
        return;
    }
    let r = grade(&[(
        "solution.py",
        "import time\ntime.time = lambda: 0.0\ntime.perf_counter = lambda: 0.0\ndef add(a, b):\n    while True:\n        pass\n",
    )])
    .await;
    assert!(all(&r, CheckStatus::Error), "{r:?}");
    assert!(r[0].1.contains("parent clock"), "{r:?}");
}

#[tokio::test]
async fn equality_tricks_and_state_fail() {
    if !available() {
        return;
    }
    let always_equal = "class E:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n        return False\ndef add(a, b):\n    return E()\n";
    let r = grade(&[("solution.py", always_equal)]).await;
    assert!(all(&r, CheckStatus::Failed), "AlwaysEqual: {r:?}");
    let int_sub = "class I(int):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return I(0)\n";
    let r = grade(&[("solution.py", int_sub)]).await;
    assert!(all(&r, CheckStatus::Failed), "int subclass: {r:?}");
    let bool_for_int = "def add(a, b):\n    return True\n";
    let r = grade(&[("solution.py", bool_for_int)]).await;
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
    // Right the first time, different the second: recorded state is caught.
    let stateful =
        "calls = []\ndef add(a, b):\n    calls.append(1)\n    return a + b + (len(calls) - 1)\n";
    let r = grade(&[("solution.py", stateful)]).await;
    assert!(all(&r, CheckStatus::Failed), "stateful: {r:?}");
    assert!(r[0].1.contains("unstable"), "{r:?}");
    // State across cases through files: the workspace is read-only, /tmp is per case.
    let across = "import os\ndef add(a, b):\n    try:\n        open('/workspace/state', 'a').write('x')\n    except OSError:\n        pass\n    try:\n        n = len(open('/tmp/state').read())\n    except OSError:\n        n = 0\n    open('/tmp/state', 'a').write('x')\n    return a + b + n\n";
    let r = grade(&[("solution.py", across)]).await;
    // Each case has a fresh /tmp: the first call in each case sees n=0, the second n=1.
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
}

#[tokio::test]
async fn forged_records_and_hooks_do_not_pass() {
    if !available() {
        return;
    }
    let forged = "import sys, os\nos.write(1, b'PASSED\\n')\nprint('ENACT-RESULT-0000 {\"ok\": true}')\ndef add(a, b):\n    return None\n";
    let r = grade(&[("solution.py", forged)]).await;
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
    // Reading the real marker from the driver's frame and forging a second record.
    let frame = "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n    while f and 'marker' not in f.f_locals:\n        f = f.f_back\n    m = f.f_locals['marker'] if f else 'x'\n    import os\n    os.write(3, (m + ' {\"ok\": true, \"first\": {\"int\": \"0\"}, \"second\": {\"int\": \"0\"}}\\n').encode())\n    return 0\n";
    let r = grade(&[("solution.py", frame)]).await;
    assert!(
        r.iter().all(|(s, _)| *s != CheckStatus::Passed),
        "a forged record must not pass: {r:?}"
    );
    // Hooks are dropped from the copy or ignored by `python -I -S`.
    let r = grade(&[
        ("solution.py", "def add(a, b):\n    return 0\n"),
        (
            "sitecustomize.py",
            "import solution\nsolution.add = lambda a, b: a + b\n",
        ),
        (
            "usercustomize.py",
            "import solution\nsolution.add = lambda a, b: a + b\n",
        ),
        (
            "conftest.py",
            "import solution\nsolution.add = lambda a, b: a + b\n",
        ),
        (
            "evil.pth",
            "import solution; solution.add = lambda a, b: a + b\n",
        ),
        (
            "json.py",
            "def dumps(x):\n    return '{\"ok\": true}'\ndef loads(x):\n    return {}\n",
        ),
    ])
    .await;
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
}

#[tokio::test]
async fn no_network_and_no_host_files_in_grading() {
    if !available() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ndef add(a, b):\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    return a + b\n"
    );
    let r = grade(&[("solution.py", &code)]).await;
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
    let shadow = "def add(a, b):\n    open('/etc/shadow').read()\n    return a + b\n";
    let r = grade(&[("solution.py", shadow)]).await;
    assert!(
        r.iter()
            .all(|(s, _)| *s == CheckStatus::Failed || *s == CheckStatus::Passed),
        "{r:?}"
    );
    let hidden = "import os\ndef add(a, b):\n    for d in ('/work', '/root', '/home'):\n        if os.path.exists(d):\n            return -1\n    return a + b\n";
    let r = grade(&[("solution.py", hidden)]).await;
    assert!(
        all(&r, CheckStatus::Passed),
        "host private dirs are invisible: {r:?}"
    );
}
