//! The built-in `multisearch` environment: K independent questions over the `search` corpus
//! in one task, each separately checkable — a task where splitting the work pays
//! (`docs/multi-agent.md`).
//!
//! The tools are `search`'s (`search`, `read_document`). The answer is a numbered list, one
//! line per question (`1. Kalo River`); reward and progress are the fraction answered right,
//! success is all of them. [`SubtaskVerifier`] grades a sub-agent that was given some of the
//! questions (its task text contains them) against just those: the per-agent reward of a team.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use enact_core::{
    CheckResult, EnvError, Environment, SeededRng, Submission, Task, Verdict, Verifier, VerifyError,
};
use enact_model::chatml::{hermes_call_turn, hermes_tool_call};
use serde_json::json;

use crate::search::{
    DEFAULT_CORPUS_SEED, Question, SearchEnv, SearchIndex, answer_matches, normalize_answer,
};
use crate::suite::{Suite, generated_task, split_stream};

/// Questions per task.
pub const QUESTIONS_PER_TASK: usize = 3;

const SYSTEM: &str = "You answer questions by searching a document collection. Use search to find documents and read_document to read them; follow the facts from document to document. When asked several questions, reply with one line per question: its number, a period and the answer (a name), e.g. `1. Kalo River`, and nothing else.";

/// The questions of a task, in order.
fn task_questions(task: &Task) -> Result<(Arc<SearchIndex>, Vec<Question>), String> {
    let seed = task.env["corpus_seed"]
        .as_u64()
        .ok_or_else(|| format!("task {} has no env.corpus_seed", task.id))?;
    let items = task.env["questions"]
        .as_array()
        .ok_or_else(|| format!("task {} has no env.questions", task.id))?;
    let index = SearchIndex::shared(seed).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for q in items {
        let template = q["template"].as_str().unwrap_or_default();
        let entity = q["entity"].as_u64().unwrap_or(u64::MAX) as usize;
        out.push(index.corpus.question(template, entity).ok_or_else(|| {
            format!(
                "task {}: unknown template {template:?} or entity {entity}",
                task.id
            )
        })?);
    }
    Ok((index, out))
}

/// The answer to question `n` (1-based) of a numbered list: the text after `n.`, `n)` or
/// `n:` at the start of a line.
fn numbered_answer(text: &str, n: usize) -> Option<String> {
    let prefix = n.to_string();
    text.lines().find_map(|line| {
        let rest = line
            .trim()
            .trim_start_matches(['-', '*', ' '])
            .strip_prefix(&prefix)?;
        let rest = rest.strip_prefix(['.', ')', ':'])?;
        Some(rest.trim().to_string())
    })
}

/// Grades `answer` against `questions`: one check per question. A lone question may also be
/// answered without a number.
fn grade(questions: &[Question], answer: &str) -> Verdict {
    let checks: Vec<CheckResult> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let given = numbered_answer(answer, i + 1)
                .or_else(|| (questions.len() == 1).then(|| answer.trim().to_string()))
                .unwrap_or_default();
            CheckResult::new(
                format!("q{}", i + 1),
                answer_matches(&given, &q.answer),
                format!("got {given:?} (normalised {:?})", normalize_answer(&given)),
            )
        })
        .collect();
    // Partial credit: the reward is the fraction right (from_checks gives 1 only for all).
    let mut v = Verdict::from_checks(checks);
    v.reward = v.progress;
    v.components = BTreeMap::from([("answers".to_string(), v.progress)]);
    v
}

/// Grades a `multisearch` answer: the fraction of questions answered right.
pub struct MultiSearchVerifier;

#[async_trait]
impl Verifier for MultiSearchVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let (_, questions) = task_questions(task).map_err(VerifyError::Malformed)?;
        Ok(grade(
            &questions,
            sub.final_answer.as_deref().unwrap_or_default(),
        ))
    }
}

/// The questions of the task whose text `prompt` contains (a sub-agent's share).
fn contained(questions: Vec<Question>, prompt: &str) -> Vec<Question> {
    questions
        .into_iter()
        .filter(|q| prompt.contains(&q.text))
        .collect()
}

/// Grades a sub-agent on the questions its task text contains; none contained is an error
/// (the sub-task is not checkable, and the caller falls back to the shared reward).
pub struct SubtaskVerifier;

#[async_trait]
impl Verifier for SubtaskVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let (_, questions) = task_questions(task).map_err(VerifyError::Malformed)?;
        let mine = contained(questions, &task.prompt);
        if mine.is_empty() {
            return Err(VerifyError::Malformed(format!(
                "task {}: the sub-task text contains none of the task's questions word for word, so it cannot be graded on its own",
                task.id
            )));
        }
        Ok(grade(
            &mine,
            sub.final_answer.as_deref().unwrap_or_default(),
        ))
    }
}

/// The `multisearch` task suite.
pub struct MultiSearchSuite {
    pub corpus_seed: u64,
    pub questions: usize,
}

impl Default for MultiSearchSuite {
    fn default() -> Self {
        MultiSearchSuite {
            corpus_seed: DEFAULT_CORPUS_SEED,
            questions: QUESTIONS_PER_TASK,
        }
    }
}

/// The task text of questions: a numbered list and how to answer.
fn prompt_of(questions: &[Question]) -> String {
    let mut p = format!("Answer these {} independent questions.\n", questions.len());
    for (i, q) in questions.iter().enumerate() {
        p.push_str(&format!("{}. {}\n", i + 1, q.text));
    }
    p.push_str("Reply with one line per question: its number, a period and the answer.");
    p
}

/// Honest search turns for one question: a search by its text, then the supporting reads.
fn research_turns(index: &SearchIndex, q: &Question) -> Option<Vec<String>> {
    let mut turns = vec![hermes_call_turn(
        "I will search for the entity named in the question.",
        "search",
        &json!({"query": q.text, "k": 5}),
    )];
    for id in &q.support {
        let title = index.corpus.document(id)?.title.clone();
        turns.push(hermes_call_turn(
            &format!("Next I read the document about {title}."),
            "read_document",
            &json!({"id": id}),
        ));
    }
    Some(turns)
}

/// A numbered answer list.
fn numbered(answers: &[&str]) -> String {
    answers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}. {a}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Suite for MultiSearchSuite {
    fn name(&self) -> &str {
        "multisearch"
    }

    fn description(&self) -> &str {
        "several independent multi-hop questions per task over the search corpus; reward = fraction right (for teams of agents)"
    }

    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let Some(index) = SearchIndex::shared_for_tasks(self.corpus_seed) else {
            return Vec::new();
        };
        let pool = index.corpus.pool(split);
        if pool.len() < self.questions {
            return Vec::new();
        }
        let stream = split_stream(split, 0x3e57, 0x3a1e);
        let mut rng = SeededRng::new(seed ^ (stream << 32) ^ 0x3715);
        (0..count)
            .filter_map(|i| {
                let mut picked: Vec<(&str, usize)> = Vec::new();
                let mut entities = HashSet::new();
                while picked.len() < self.questions {
                    let (template, entity) = pool[rng.below(pool.len() as u64) as usize];
                    // Distinct entities: the questions do not give each other away.
                    if entities.insert((template.starts_with("product"), entity)) {
                        picked.push((template, entity));
                    }
                }
                let questions: Vec<Question> = picked
                    .iter()
                    .map(|(t, e)| index.corpus.question(t, *e))
                    .collect::<Option<_>>()?;
                let items: Vec<_> = picked
                    .iter()
                    .map(|(t, e)| json!({"template": t, "entity": e}))
                    .collect();
                Some(generated_task(
                    "multisearch",
                    split,
                    seed,
                    i,
                    prompt_of(&questions),
                    json!({"kind": "multisearch", "corpus_seed": self.corpus_seed, "questions": items}),
                ))
            })
            .collect()
    }

    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let index = SearchIndex::for_task(task, self.corpus_seed)?;
        Ok(Box::new(SearchEnv::new(index).with_system(SYSTEM)))
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(MultiSearchVerifier)
    }

    fn subtask_verifier(&self) -> Option<Arc<dyn Verifier>> {
        Some(Arc::new(SubtaskVerifier))
    }

    /// Single agent: research every question, then the numbered answers. A team's entry role
    /// (`metadata.may_call` names the roles it may call) delegates one question per call, all
    /// in one reply, then lists the answers; a sub-agent (its task text holds some questions)
    /// researches just those.
    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let (index, questions) = task_questions(task).ok()?;
        if let Some(callee) = task.metadata.get("may_call").and_then(|m| m[0].as_str()) {
            let calls: Vec<String> = questions
                .iter()
                .map(|q| {
                    hermes_tool_call(
                        "delegate",
                        &json!({"role": callee, "task": format!("{}\nReply with only the answer.", q.text)}),
                    )
                })
                .collect();
            let answers: Vec<&str> = questions.iter().map(|q| q.answer.as_str()).collect();
            return Some(vec![calls.join("\n"), numbered(&answers)]);
        }
        let mine = if task.metadata.contains_key("parent_task") {
            contained(questions, &task.prompt)
        } else {
            questions
        };
        let mut turns = Vec::new();
        for q in &mine {
            turns.extend(research_turns(&index, q)?);
        }
        let answers: Vec<&str> = mine.iter().map(|q| q.answer.as_str()).collect();
        turns.push(if mine.len() == 1 {
            answers[0].to_string()
        } else {
            numbered(&answers)
        });
        Some(turns)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numbered_answers_are_found_per_line() {
        let text = "1. Kalo River\n2) Veloria\n - 3: Ann Bo";
        assert_eq!(numbered_answer(text, 1).as_deref(), Some("Kalo River"));
        assert_eq!(numbered_answer(text, 2).as_deref(), Some("Veloria"));
        assert_eq!(numbered_answer(text, 3).as_deref(), Some("Ann Bo"));
        assert_eq!(numbered_answer(text, 4), None);
        // "12." is not question 1.
        assert_eq!(numbered_answer("12. x", 1), None);
    }

    #[tokio::test]
    async fn partial_answers_score_the_fraction_right() {
        let suite = MultiSearchSuite::default();
        let task = suite.tasks("test", 1, 3).remove(0);
        let (_, qs) = task_questions(&task).unwrap();
        assert_eq!(qs.len(), QUESTIONS_PER_TASK);
        let answer = format!("1. {}\n2. wrong\n3. {}", qs[0].answer, qs[2].answer);
        let sub = Submission {
            final_answer: Some(answer),
            ..Default::default()
        };
        let v = MultiSearchVerifier.verify(&task, &sub).await.unwrap();
        assert!((v.reward - 2.0 / 3.0).abs() < 1e-9 && !v.success(), "{v:?}");

        // A sub-agent given question 2 is graded on it alone.
        let mut child = task.clone();
        child.prompt = format!("{}\nReply with only the answer.", qs[1].text);
        let sub = Submission {
            final_answer: Some(qs[1].answer.clone()),
            ..Default::default()
        };
        let v = SubtaskVerifier.verify(&child, &sub).await.unwrap();
        assert!(v.success() && v.reward == 1.0, "{v:?}");
        child.prompt = "something else".into();
        assert!(SubtaskVerifier.verify(&child, &sub).await.is_err());
    }
}
