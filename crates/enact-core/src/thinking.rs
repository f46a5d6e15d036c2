//! Thinking control: how much an agent may think, per agent, per episode and per turn.
//!
//! A [`ThinkingMode`] says what the run asks for (`off`, a token `budget`, or `adaptive` with
//! an [`Effort`]); a [`ThinkingController`] turns it into a [`TurnDecision`] for each turn from
//! what is known then ([`DecisionSignals`]: the last step failed, a streak of successes, what
//! is left of the episode's budget, the model's surprisal over its first thinking tokens); a
//! [`ThinkingStyle`] says how the model family writes thoughts (tags, the hard and soft
//! switches, the stop-thinking text a budget inserts). The agent loop enforces the decision
//! token-exactly; every decision is recorded in the episode (`EpisodeOutcome::per_turn`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How hard the agent should think when it decides for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    Low,
    Medium,
    High,
    Max,
}

impl Effort {
    /// Thinking tokens per turn this effort starts from (before the controller scales it).
    pub fn base_budget(self) -> u32 {
        match self {
            Effort::Low => 128,
            Effort::Medium => 512,
            Effort::High => 2048,
            Effort::Max => 8192,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
            Effort::Max => "max",
        }
    }
}

impl FromStr for Effort {
    type Err = ThinkingModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Effort::Low),
            "medium" | "med" => Ok(Effort::Medium),
            "high" => Ok(Effort::High),
            "max" => Ok(Effort::Max),
            other => Err(ThinkingModeError(format!(
                "unknown effort {other:?}: use low, medium, high or max"
            ))),
        }
    }
}

/// What a run asks of the model's thinking.
///
/// Written as a string (`off`, `budget:256`, `budget:256/2048` with an episode budget,
/// `budget:256,min:32`, `low`…`max` as budgets, `adaptive`, `adaptive:high`,
/// `adaptive:high/4096`) or, in TOML, as a table `{ mode = "budget", per_turn = 256 }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ThinkingMode {
    /// The model thinks as its template and training make it; nothing is inserted.
    #[default]
    Free,
    /// No thinking: the template's hard switch, an empty think block, or nothing for an
    /// instruct model.
    Off,
    /// At most `per_turn` thinking tokens per turn (and `per_episode` in all); when reached,
    /// the style's stop-thinking text is inserted as forced tokens. With `min_per_turn`, a
    /// model that closes its thoughts earlier gets the style's continue text ("Wait") instead.
    Budget {
        per_turn: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_episode: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_per_turn: Option<u32>,
    },
    /// The controller decides per turn whether and how much to think, starting from the
    /// effort's budget.
    Adaptive {
        effort: Effort,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_episode: Option<u32>,
    },
}

/// A thinking mode that does not parse.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid thinking mode: {0}")]
pub struct ThinkingModeError(pub String);

const MODE_SYNTAX: &str = "use free, off, budget:N (budget:N/EPISODE, budget:N,min:M), low, medium, high, max, adaptive or adaptive:EFFORT (adaptive:EFFORT/EPISODE)";

fn parse_tokens(s: &str, what: &str) -> Result<u32, ThinkingModeError> {
    s.trim().parse::<u32>().map_err(|_| {
        ThinkingModeError(format!(
            "{what} {s:?} is not a whole number of tokens; {MODE_SYNTAX}"
        ))
    })
}

impl FromStr for ThinkingMode {
    type Err = ThinkingModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (head, rest) = match s.split_once(':') {
            Some((h, r)) => (h.trim().to_ascii_lowercase(), Some(r.trim())),
            None => (s.to_ascii_lowercase(), None),
        };
        match (head.as_str(), rest) {
            ("free", None) => Ok(ThinkingMode::Free),
            ("off" | "none", None) => Ok(ThinkingMode::Off),
            ("low" | "medium" | "high" | "max", None) => Ok(ThinkingMode::Budget {
                per_turn: head.parse::<Effort>()?.base_budget(),
                per_episode: None,
                min_per_turn: None,
            }),
            ("budget", Some(spec)) => {
                let (main, min) = match spec.split_once(',') {
                    Some((m, min)) => {
                        let min = min.trim();
                        let Some(n) = min.strip_prefix("min:") else {
                            return Err(ThinkingModeError(format!(
                                "{min:?} after the comma is not min:N; {MODE_SYNTAX}"
                            )));
                        };
                        (m, Some(parse_tokens(n, "minimum")?))
                    }
                    None => (spec, None),
                };
                let (turn, episode) = match main.split_once('/') {
                    Some((t, e)) => (t, Some(parse_tokens(e, "episode budget")?)),
                    None => (main, None),
                };
                let mode = ThinkingMode::Budget {
                    per_turn: parse_tokens(turn, "budget")?,
                    per_episode: episode,
                    min_per_turn: min,
                };
                mode.check()?;
                Ok(mode)
            }
            ("adaptive", spec) => {
                let (effort, episode) = match spec {
                    None => (Effort::Medium, None),
                    Some(spec) => match spec.split_once('/') {
                        Some((e, b)) => (e.parse()?, Some(parse_tokens(b, "episode budget")?)),
                        None => (spec.parse()?, None),
                    },
                };
                Ok(ThinkingMode::Adaptive {
                    effort,
                    per_episode: episode,
                })
            }
            _ => Err(ThinkingModeError(format!("{s:?}: {MODE_SYNTAX}"))),
        }
    }
}

impl fmt::Display for ThinkingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThinkingMode::Free => f.write_str("free"),
            ThinkingMode::Off => f.write_str("off"),
            ThinkingMode::Budget {
                per_turn,
                per_episode,
                min_per_turn,
            } => {
                write!(f, "budget:{per_turn}")?;
                if let Some(e) = per_episode {
                    write!(f, "/{e}")?;
                }
                if let Some(m) = min_per_turn {
                    write!(f, ",min:{m}")?;
                }
                Ok(())
            }
            ThinkingMode::Adaptive {
                effort,
                per_episode,
            } => {
                write!(f, "adaptive:{}", effort.name())?;
                if let Some(e) = per_episode {
                    write!(f, "/{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl ThinkingMode {
    /// Rejects budgets that cannot be met (a minimum above the maximum).
    pub fn check(&self) -> Result<(), ThinkingModeError> {
        if let ThinkingMode::Budget {
            per_turn,
            min_per_turn: Some(min),
            ..
        } = self
            && min > per_turn
        {
            return Err(ThinkingModeError(format!(
                "the minimum of {min} thinking tokens is above the budget of {per_turn}; lower min or raise the budget"
            )));
        }
        Ok(())
    }

    /// The episode's thinking budget, if the mode has one.
    pub fn per_episode(&self) -> Option<u32> {
        match self {
            ThinkingMode::Budget { per_episode, .. }
            | ThinkingMode::Adaptive { per_episode, .. } => *per_episode,
            _ => None,
        }
    }
}

/// Both spellings: a string (`"budget:256"`) or a tagged table (`{mode = "budget", ...}`).
impl<'de> Deserialize<'de> for ThinkingMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
        enum Table {
            Free,
            Off,
            Budget {
                per_turn: u32,
                #[serde(default)]
                per_episode: Option<u32>,
                #[serde(default)]
                min_per_turn: Option<u32>,
            },
            Adaptive {
                #[serde(default = "medium")]
                effort: Effort,
                #[serde(default)]
                per_episode: Option<u32>,
            },
        }
        fn medium() -> Effort {
            Effort::Medium
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Table(Table),
        }
        let mode = match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom(format!(
                "invalid thinking mode: write a string ({MODE_SYNTAX}) or a table with mode = \"off\" | \"budget\" (per_turn, per_episode, min_per_turn) | \"adaptive\" (effort, per_episode)"
            ))
        })? {
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom)?,
            Repr::Table(Table::Free) => ThinkingMode::Free,
            Repr::Table(Table::Off) => ThinkingMode::Off,
            Repr::Table(Table::Budget {
                per_turn,
                per_episode,
                min_per_turn,
            }) => ThinkingMode::Budget {
                per_turn,
                per_episode,
                min_per_turn,
            },
            Repr::Table(Table::Adaptive {
                effort,
                per_episode,
            }) => ThinkingMode::Adaptive {
                effort,
                per_episode,
            },
        };
        mode.check().map_err(serde::de::Error::custom)?;
        Ok(mode)
    }
}

/// How thinking is switched off for a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OffSwitch {
    /// The template's `enable_thinking=false` (Qwen3 hybrid: an empty think block in the
    /// generation prompt).
    HardSwitch,
    /// The model's soft switch appended to the task's user message (`/no_think`).
    SoftSwitch,
    /// Forced tokens: an empty think block (a thinking-only model whose template opens the
    /// block itself gets only its closing part).
    EmptyBlock,
    /// Nothing to do: the model does not think unless asked to.
    Nothing,
}

/// How a model family writes its thoughts, and what enact inserts to steer them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinkingStyle {
    /// `<think>`
    pub open: String,
    /// `</think>`
    pub close: String,
    /// Inserted (as forced tokens) when a budget is reached: ends the thought and leads to
    /// the answer. Qwen3's recipe by default.
    pub stop_text: String,
    /// Inserted when the model closes its thought before a minimum (s1 budget forcing).
    pub continue_text: String,
    /// The model was trained to think in these tags (Qwen3). Otherwise it thinks only where
    /// enact opens the block for it (forced tokens, for a budget's minimum) or where it has
    /// learned to (e.g. by a warm start on reference solutions that think).
    pub native: bool,
    /// The template's generation prompt already opens the block (thinking-only models such as
    /// Qwen3-Thinking-2507): replies hold only the closing tag.
    pub prefilled_open: bool,
    /// The template takes `enable_thinking` (the hard switch).
    pub hard_switch: bool,
    /// The model's soft switches (`/think`, `/no_think`), if it was trained on them.
    pub soft_switches: Option<(String, String)>,
    /// How `off` is carried out.
    pub off: OffSwitch,
    /// The model thinks at all (false for instruct-only models: budgets have nothing to cut).
    pub can_think: bool,
}

impl Default for ThinkingStyle {
    fn default() -> Self {
        ThinkingStyle::prompted()
    }
}

/// Qwen3's stop-thinking text (Qwen3 technical report §4.3), without the closing tag.
pub const QWEN3_STOP_THINKING: &str = "Considering the limited time by the user, I have to give the solution based on the thinking directly now.";

impl ThinkingStyle {
    /// A model without native thinking: it thinks in `<think>` blocks only when it has
    /// learned to, or when enact opens one to force a minimum.
    pub fn prompted() -> Self {
        ThinkingStyle {
            open: "<think>".into(),
            close: "</think>".into(),
            stop_text: format!("\n\n{QWEN3_STOP_THINKING}\n</think>.\n\n"),
            continue_text: "\nWait".into(),
            native: false,
            prefilled_open: false,
            hard_switch: false,
            soft_switches: None,
            // enact's own protocol for prompted thoughts: off is an empty thought.
            off: OffSwitch::EmptyBlock,
            can_think: true,
        }
    }

    /// Qwen3 hybrid (2504): thinks in `<think>` by default, hard and soft switches.
    pub fn qwen3_hybrid() -> Self {
        ThinkingStyle {
            native: true,
            hard_switch: true,
            soft_switches: Some(("/think".into(), "/no_think".into())),
            off: OffSwitch::HardSwitch,
            ..Self::prompted()
        }
    }

    /// A thinking-only model whose template pre-inserts `<think>\n` (Qwen3-Thinking-2507).
    pub fn thinking_only() -> Self {
        ThinkingStyle {
            native: true,
            prefilled_open: true,
            ..Self::prompted()
        }
    }

    /// An instruct-only model that never thinks (Qwen3-Instruct-2507: the template puts an
    /// empty think block in every generation prompt).
    pub fn instruct_only() -> Self {
        ThinkingStyle {
            native: true,
            off: OffSwitch::Nothing,
            can_think: false,
            ..Self::prompted()
        }
    }

    /// The forced text that opens a thought when the model does not open it itself.
    pub fn open_text(&self) -> String {
        format!("{}\n", self.open)
    }

    /// The forced text of an empty thought (thinking switched off by tokens).
    pub fn empty_block(&self) -> String {
        if self.prefilled_open {
            format!("\n{}\n\n", self.close)
        } else {
            format!("{}\n\n{}\n\n", self.open, self.close)
        }
    }
}

/// What the controller knew when it decided a turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionSignals {
    /// The assistant turn being decided (1-based).
    pub turn: u32,
    /// The previous turn's step failed: a tool returned an error or a call did not parse.
    pub last_step_failed: bool,
    /// Failed tool calls in the previous turn.
    pub tool_errors_last_turn: u32,
    /// Turns in a row, up to the previous one, whose steps all succeeded.
    pub success_streak: u32,
    /// Thinking tokens left in the episode's budget, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode_budget_left: Option<u32>,
    /// Mean surprisal (−logprob, nats) of the first thinking tokens of this turn: the
    /// model's own uncertainty, known after a short probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_surprisal: Option<f32>,
    /// The model closed its thought at once in the previous turn.
    #[serde(default)]
    pub closed_at_once_last_turn: bool,
}

/// A turn's thinking decision, recorded in the episode so it can be audited and trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnDecision {
    /// Whether the turn may think at all.
    pub think: bool,
    /// Most thinking tokens this turn (`None`: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u32>,
    /// Fewest thinking tokens (budget forcing with the continue text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The backend chosen for the turn when routing (`instruct` / `thinking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Why, in words (e.g. "last step failed: ×2").
    pub reason: String,
    pub signals: DecisionSignals,
    /// How the budget changed after the probe of the first thinking tokens, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refined_budget: Option<u32>,
}

impl TurnDecision {
    /// No decision to enforce: the model thinks as it will.
    pub fn free(signals: DecisionSignals) -> Self {
        TurnDecision {
            think: true,
            budget: None,
            min: None,
            route: None,
            reason: "free: no thinking control".into(),
            signals,
            refined_budget: None,
        }
    }

    /// The budget in force (after refinement).
    pub fn effective_budget(&self) -> Option<u32> {
        self.refined_budget.or(self.budget)
    }
}

/// Decides per turn whether and how much to think. Pluggable; [`DefaultController`] is the
/// documented default.
pub trait ThinkingController: Send + Sync {
    /// The decision for a turn, before anything of it is sampled.
    fn decide(&self, mode: &ThinkingMode, signals: &DecisionSignals) -> TurnDecision;
    /// How many thinking tokens to sample before [`ThinkingController::refine`] is asked
    /// (0: never asked).
    fn probe_tokens(&self, _mode: &ThinkingMode, _decision: &TurnDecision) -> u32 {
        0
    }
    /// A new budget once the first `probe_tokens` thinking tokens are known (their mean
    /// surprisal is in `signals.probe_surprisal`); `None` keeps the budget.
    fn refine(&self, _decision: &TurnDecision, _signals: &DecisionSignals) -> Option<u32> {
        None
    }
    /// Routes a turn to the thinking backend (when two are configured).
    fn route_to_thinking(&self, decision: &TurnDecision) -> bool {
        decision.think
    }
}

/// The default controller.
///
/// - `free`, `off` and `budget` are enforced as written (the episode budget caps each turn).
/// - `adaptive`: start from the effort's base budget; after a failed step (a tool error or an
///   unparsable call) multiply it by `escalate` (×2); after `streak` successful steps in a
///   row multiply it by `relax` (×½), and at low effort think not at all; the first turn
///   plans at the base budget. After `probe` thinking tokens, a mean surprisal above
///   `uncertain_nats` raises the budget by ×1.5, one below `confident_nats` halves it (never
///   below what was already thought). Everything is clamped by the episode's remaining
///   budget; an exhausted episode budget turns thinking off.
/// - Routing: a turn with a thinking budget above `route_above` (or any escalated turn) goes
///   to the thinking backend; routine turns to the instruct one.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultController {
    pub escalate: f32,
    pub relax: f32,
    pub streak: u32,
    pub probe: u32,
    pub uncertain_nats: f32,
    pub confident_nats: f32,
    pub route_above: u32,
}

impl Default for DefaultController {
    fn default() -> Self {
        DefaultController {
            escalate: 2.0,
            relax: 0.5,
            streak: 2,
            probe: 8,
            uncertain_nats: 2.5,
            confident_nats: 0.5,
            route_above: 256,
        }
    }
}

fn scale(budget: u32, factor: f32) -> u32 {
    ((budget as f32) * factor)
        .round()
        .clamp(1.0, u32::MAX as f32) as u32
}

impl ThinkingController for DefaultController {
    fn decide(&self, mode: &ThinkingMode, signals: &DecisionSignals) -> TurnDecision {
        let off = |reason: String| TurnDecision {
            think: false,
            budget: Some(0),
            min: None,
            route: None,
            reason,
            signals: signals.clone(),
            refined_budget: None,
        };
        let left = signals.episode_budget_left;
        if left == Some(0) && !matches!(mode, ThinkingMode::Free) {
            return off("episode thinking budget spent".into());
        }
        let clamp = |b: u32| left.map_or(b, |l| b.min(l));
        let (budget, min, reason) = match mode {
            ThinkingMode::Free => return TurnDecision::free(signals.clone()),
            ThinkingMode::Off => return off("off".into()),
            ThinkingMode::Budget {
                per_turn,
                min_per_turn,
                ..
            } => (*per_turn, *min_per_turn, format!("budget {per_turn}")),
            ThinkingMode::Adaptive { effort, .. } => {
                let base = effort.base_budget();
                if signals.last_step_failed {
                    let b = scale(base, self.escalate);
                    (
                        b,
                        None,
                        format!(
                            "{}: last step failed ({} tool error(s)): ×{} → {b}",
                            effort.name(),
                            signals.tool_errors_last_turn,
                            self.escalate
                        ),
                    )
                } else if signals.turn > 1 && signals.success_streak >= self.streak {
                    if *effort == Effort::Low {
                        return off(format!(
                            "low: {} successful steps in a row: no thinking",
                            signals.success_streak
                        ));
                    }
                    let b = scale(base, self.relax);
                    (
                        b,
                        None,
                        format!(
                            "{}: {} successful steps in a row: ×{} → {b}",
                            effort.name(),
                            signals.success_streak,
                            self.relax
                        ),
                    )
                } else {
                    (base, None, format!("{}: base budget {base}", effort.name()))
                }
            }
        };
        let budget = clamp(budget);
        if budget == 0 {
            return off(format!("{reason}; nothing left in the episode budget"));
        }
        TurnDecision {
            think: true,
            budget: Some(budget),
            min: min.map(|m| m.min(budget)),
            route: None,
            reason,
            signals: signals.clone(),
            refined_budget: None,
        }
    }

    fn probe_tokens(&self, mode: &ThinkingMode, decision: &TurnDecision) -> u32 {
        // Only adaptive decisions are refined; a written budget is the user's.
        match (mode, decision.budget) {
            (ThinkingMode::Adaptive { .. }, Some(b)) if decision.think && b > self.probe => {
                self.probe
            }
            _ => 0,
        }
    }

    fn refine(&self, decision: &TurnDecision, signals: &DecisionSignals) -> Option<u32> {
        let budget = decision.budget?;
        let surprisal = signals.probe_surprisal?;
        let new = if surprisal > self.uncertain_nats {
            scale(budget, 1.5)
        } else if surprisal < self.confident_nats {
            scale(budget, 0.5).max(self.probe)
        } else {
            return None;
        };
        let new = signals.episode_budget_left.map_or(new, |l| new.min(l));
        (new != budget).then_some(new)
    }

    fn route_to_thinking(&self, decision: &TurnDecision) -> bool {
        decision.think
            && (decision.signals.last_step_failed
                || decision
                    .effective_budget()
                    .is_none_or(|b| b > self.route_above))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        for s in [
            "free",
            "off",
            "budget:256",
            "budget:256/2048",
            "budget:256,min:32",
            "budget:256/1024,min:8",
            "adaptive:high",
            "adaptive:low/512",
        ] {
            let m: ThinkingMode = s.parse().unwrap();
            assert_eq!(m.to_string(), s);
            assert_eq!(m.to_string().parse::<ThinkingMode>().unwrap(), m);
        }
        assert_eq!(
            "high".parse::<ThinkingMode>().unwrap(),
            ThinkingMode::Budget {
                per_turn: 2048,
                per_episode: None,
                min_per_turn: None
            }
        );
        assert_eq!(
            "adaptive".parse::<ThinkingMode>().unwrap(),
            ThinkingMode::Adaptive {
                effort: Effort::Medium,
                per_episode: None
            }
        );
    }

    #[test]
    fn bad_modes_say_what_to_write() {
        for s in [
            "",
            "budget",
            "budget:x",
            "budget:-3",
            "adaptive:huge",
            "budget:10,min:20",
            "budget:5,max:3",
            "think",
        ] {
            let e = s.parse::<ThinkingMode>().unwrap_err().to_string();
            assert!(e.contains("thinking mode"), "{s}: {e}");
        }
    }

    #[test]
    fn modes_deserialize_from_strings_and_tables() {
        #[derive(Deserialize)]
        struct Cfg {
            thinking: ThinkingMode,
        }
        let a: Cfg = serde_json::from_str(r#"{"thinking": "budget:64"}"#).unwrap();
        let b: Cfg =
            serde_json::from_str(r#"{"thinking": {"mode": "budget", "per_turn": 64}}"#).unwrap();
        assert_eq!(a.thinking, b.thinking);
        let c: Cfg =
            serde_json::from_str(r#"{"thinking": {"mode": "adaptive", "effort": "high"}}"#)
                .unwrap();
        assert_eq!(c.thinking.to_string(), "adaptive:high");
        let bad = serde_json::from_str::<Cfg>(r#"{"thinking": {"mode": "budget"}}"#);
        assert!(bad.is_err());
        let round = serde_json::to_string(&c.thinking).unwrap();
        assert_eq!(
            serde_json::from_str::<ThinkingMode>(&round).unwrap(),
            c.thinking
        );
    }

    fn signals(turn: u32, failed: bool, streak: u32) -> DecisionSignals {
        DecisionSignals {
            turn,
            last_step_failed: failed,
            tool_errors_last_turn: failed as u32,
            success_streak: streak,
            ..Default::default()
        }
    }

    #[test]
    fn adaptive_thinks_more_after_a_failure_than_after_success() {
        let c = DefaultController::default();
        for effort in [Effort::Low, Effort::Medium, Effort::High, Effort::Max] {
            let mode = ThinkingMode::Adaptive {
                effort,
                per_episode: None,
            };
            let after_fail = c.decide(&mode, &signals(3, true, 0));
            let after_ok = c.decide(&mode, &signals(3, false, 2));
            assert!(after_fail.think);
            assert!(
                after_fail.budget.unwrap() > after_ok.budget.unwrap_or(0),
                "{effort:?}: {after_fail:?} vs {after_ok:?}"
            );
            assert!(c.route_to_thinking(&after_fail));
        }
    }

    #[test]
    fn the_episode_budget_caps_and_then_stops_thinking() {
        let c = DefaultController::default();
        let mode: ThinkingMode = "budget:100/150".parse().unwrap();
        let mut s = signals(1, false, 0);
        s.episode_budget_left = Some(40);
        assert_eq!(c.decide(&mode, &s).budget, Some(40));
        s.episode_budget_left = Some(0);
        let d = c.decide(&mode, &s);
        assert!(!d.think);
    }

    #[test]
    fn probes_refine_adaptive_budgets_only() {
        let c = DefaultController::default();
        let mode: ThinkingMode = "adaptive:medium".parse().unwrap();
        let adaptive = c.decide(&mode, &signals(1, false, 0));
        assert_eq!(c.probe_tokens(&mode, &adaptive), 8);
        let mut s = adaptive.signals.clone();
        s.probe_surprisal = Some(4.0);
        assert_eq!(c.refine(&adaptive, &s), Some(768));
        s.probe_surprisal = Some(0.1);
        assert_eq!(c.refine(&adaptive, &s), Some(256));
        let mode: ThinkingMode = "budget:512".parse().unwrap();
        let written = c.decide(&mode, &signals(1, false, 0));
        assert_eq!(c.probe_tokens(&mode, &written), 0);
    }
}
