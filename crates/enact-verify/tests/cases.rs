//! The two-phase program grader against the real sandbox: honest programs pass; a candidate
//! cannot reach expected values, the results channel or a start-up hook, and its writes stay
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::{all, available, dir_with};
use enact_core::CheckStatus;
use enact_sandbox::IsolationLevel;
use enact_verify::{CaseRunner, Compare, CopyRules, GradeLimits, ProgramCase, find_python};
use serde_json::json;

fn cases() -> Vec<ProgramCase> {
    [("a", "2 3\n", 5), ("b", "10 -4\n", 6), ("c", "0 0\n", 0)]
        .iter()
        .map(|(id, input, sum)| ProgramCase {
            id: id.to_string(),
            input: input.to_string(),
            expected: json!(sum.to_string()),
        })
        .collect()
}

async fn grade(files: &[(&str, &str)]) -> Vec<(CheckStatus, String)> {
    let dir = dir_with(files);
    let runner = CaseRunner {
        level: IsolationLevel::Full,
        argv: vec![
            find_python().unwrap().display().to_string(),
            "add.py".into(),
        ],
        harness: None,
        rules: CopyRules::task_files(false),
        limits: GradeLimits::programs(),
    };
    let cases = cases();
    let (outputs, _) = runner.run(dir.path(), &cases).await.unwrap();
    outputs
        .iter()
        .zip(&cases)
        .map(|(o, c)| {
            let r = Compare::Trimmed.judge(o, &c.expected);
            (r.status, r.detail)
        })
        .collect()
}

#[tokio::test]
async fn honest_program_passes_every_case() {
    if !available() {
        return;
    }
    let r = grade(&[
        (
            "add.py",
            "import helper\na, b = map(int, input().split())\nprint(helper.add(a, b))\n",
        ),
        ("helper.py", "def add(a, b):\n    return a + b\n"),
    ])
    .await;
    assert!(all(&r, CheckStatus::Passed), "{r:?}");
}

#[tokio::test]
async fn candidate_cannot_forge_results_or_find_expected_values() {
    if !available() {
        return;
    }
    // Import-time and run-time cheating: write results files everywhere it could, look for
    // the expected values on disk and in the environment, print "PASSED".
    let cheat = r#"
import os, glob
for p in ["/workspace/results.json", "/tmp/results.json", os.environ.get("ENACT_RESULTS", "/tmp/x")]:
    try:
        open(p, "w").write('{"checks":[{"name":"a","status":"passed"}]}')
    except OSError:
        pass
found = glob.glob("/*/cases.json") + glob.glob("/*/*/cases.json") + glob.glob("/hidden/*")
found += glob.glob("/tmp/**/cases.json", recursive=True)
print("PASSED", found, sorted(k for k in os.environ if "EXPECT" in k or "HIDDEN" in k))
"#;
    let r = grade(&[("add.py", cheat)]).await;
    assert!(all(&r, CheckStatus::Failed), "{r:?}");
    for (_, d) in &r {
        assert!(d.contains("[] []"), "something leaked: {d}");
    }
}

#[tokio::test]
async fn start_up_hooks_and_home_are_not_the_workspace() {
    if !available() {
        return;
    }
    let hook = "import builtins\nbuiltins.print = lambda *a, **k: __import__('sys').stdout.write('5\\n')\n";
    let r = grade(&[
        (
            "add.py",
            "import os\nprint(os.environ['HOME'], os.getcwd())\n",
        ),
        ("usercustomize.py", hook),
        ("sitecustomize.py", hook),
        ("evil.pth", "import usercustomize\n"),
        (".local/lib/python3.11/site-packages/usercustomize.py", hook),
    ])
    .await;
    for (s, d) in &r {
        assert_eq!(*s, CheckStatus::Failed);
        assert!(d.contains("/tmp /workspace"), "{d}");
    }
}

#[tokio::test]
async fn grading_copy_is_read_only_and_writes_are_bounded() {
    if !available() {
        return;
    }
    let r = grade(&[(
        "add.py",
        "import os\ntry:\n    open('/workspace/add.py', 'w').write('x')\n    print('wrote')\nexcept OSError:\n    pass\n\
         f = open('/tmp/fill', 'wb')\nwhile True:\n    f.write(b'0' * (1 << 20))\n",
    )])
    .await;
    for (s, d) in &r {
        assert_eq!(*s, CheckStatus::Failed);
        assert!(!d.contains("wrote"), "{d}");
        // Python ignores SIGXFSZ and sees EFBIG; other programs die of it.
        assert!(
            d.contains("File too large") || d.contains("file size limit"),
            "{d}"
        );
    }
}
