//! The built-in `search` environment: multi-hop questions over a local document corpus.
//!
//! A synthetic corpus (fictional cities, people, companies and products whose facts link
//! across documents) is generated from a seed and indexed with tantivy (BM25) once per
//! process; every episode shares the index. Questions need two or three hops, e.g. "In which
//! city was the founder of the company that makes X born?". Tools: `search(query, k)` →
//! ranked ids, titles and snippets; `read_document(id)` → the full text. The verifier
//! regenerates the corpus and recomputes the gold answer from the task's template and
//! entity (the answer never travels in the task), then grades the final answer by
//! normalised exact match (SQuAD normalisation). Progress counts the supporting documents
//! read plus the answer.

use enact_core::SeededRng;
use enact_model::chatml::hermes_call_turn;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use enact_core::{
    Action, CheckResult, EnvError, Environment, Reset, StepOutcome, Submission, Task, ToolSpec,
    Verdict, Verifier, VerifyError,
};
use serde_json::{Value, json};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, STORED, STRING, Schema, TEXT, TantivyDocument, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, doc};

use crate::conversation::ToolConversation;
use crate::error::SearchError;
use crate::suite::{Suite, generated_task, split_stream};
use crate::toolbox::{Tool, ToolBox, ToolError};

/// The corpus seed of the built-in suite.
pub const DEFAULT_CORPUS_SEED: u64 = 0x5ea2c4;

// ---------------------------------------------------------------- corpus

const COUNTRIES: [&str; 8] = [
    "Veloria",
    "Astran",
    "Kheldor",
    "Morrowind Isles",
    "Sarnia",
    "Tallis",
    "Quenmark",
    "Durovia",
];
const PROFESSIONS: [&str; 8] = [
    "engineer",
    "chemist",
    "architect",
    "economist",
    "physician",
    "mathematician",
    "designer",
    "geologist",
];
const INDUSTRIES: [&str; 6] = [
    "robotics",
    "textiles",
    "shipbuilding",
    "optics",
    "agriculture machinery",
    "medical devices",
];
const CATEGORIES: [&str; 6] = [
    "lamp",
    "loom",
    "telescope",
    "harvester",
    "drone",
    "stethoscope",
];
const SYL: [&str; 24] = [
    "ka", "lo", "mer", "ta", "vin", "dro", "sel", "qua", "rin", "bo", "tha", "zen", "mi", "cor",
    "pa", "len", "gru", "fa", "nor", "wei", "sto", "lu", "ve", "han",
];

#[derive(Debug, Clone)]
pub struct City {
    pub name: String,
    pub country: String,
    pub river: String,
    pub founded: u32,
}
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub born_in: usize,
    pub profession: String,
    pub born_year: u32,
}
#[derive(Debug, Clone)]
pub struct Company {
    pub name: String,
    pub founder: usize,
    pub hq: usize,
    pub founded: u32,
    pub industry: String,
}
#[derive(Debug, Clone)]
pub struct Product {
    pub name: String,
    pub maker: usize,
    pub year: u32,
    pub category: String,
}

/// One document of the corpus.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub title: String,
    pub body: String,
}

/// A generated corpus with its facts and documents.
#[derive(Debug)]
pub struct Corpus {
    pub seed: u64,
    pub cities: Vec<City>,
    pub people: Vec<Person>,
    pub companies: Vec<Company>,
    pub products: Vec<Product>,
    pub documents: Vec<Document>,
    by_id: HashMap<String, usize>,
}

fn cap(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

struct Namer {
    rng: SeededRng,
    used: HashSet<String>,
}

impl Namer {
    fn word(&mut self, syllables: u64) -> String {
        loop {
            let n = syllables + self.rng.below(2);
            let w: String = (0..n)
                .map(|_| SYL[self.rng.below(SYL.len() as u64) as usize])
                .collect();
            let w = cap(&w);
            if self.used.insert(w.to_lowercase()) {
                return w;
            }
        }
    }
}

impl Corpus {
    /// Generates the corpus for `seed` (deterministic).
    pub fn generate(seed: u64) -> Corpus {
        let mut rng = SeededRng::new(seed);
        let mut namer = Namer {
            rng: SeededRng::new(seed ^ 0x6e61_6d65),
            used: HashSet::new(),
        };
        fn pick(rng: &mut SeededRng, xs: &[&'static str]) -> &'static str {
            xs[rng.below(xs.len() as u64) as usize]
        }
        let cities: Vec<City> = (0..40)
            .map(|_| City {
                name: namer.word(2),
                country: pick(&mut rng, &COUNTRIES).to_string(),
                river: format!("{} River", namer.word(2)),
                founded: 900 + rng.below(900) as u32,
            })
            .collect();
        let people: Vec<Person> = (0..90)
            .map(|_| Person {
                name: format!("{} {}", namer.word(2), namer.word(2)),
                born_in: rng.below(cities.len() as u64) as usize,
                profession: pick(&mut rng, &PROFESSIONS).to_string(),
                born_year: 1900 + rng.below(90) as u32,
            })
            .collect();
        let companies: Vec<Company> = (0..60)
            .map(|i| Company {
                name: format!(
                    "{} {}",
                    namer.word(2),
                    ["Works", "Industries", "Labs", "Group"][i % 4]
                ),
                // Founders are distinct people (the first 60).
                founder: i,
                hq: rng.below(cities.len() as u64) as usize,
                founded: 1950 + rng.below(60) as u32,
                industry: pick(&mut rng, &INDUSTRIES).to_string(),
            })
            .collect();
        let products: Vec<Product> = (0..90)
            .map(|_| {
                let category = pick(&mut rng, &CATEGORIES).to_string();
                Product {
                    name: format!("the {} {}", namer.word(2), category),
                    maker: rng.below(companies.len() as u64) as usize,
                    year: 1990 + rng.below(34) as u32,
                    category,
                }
            })
            .collect();

        let mut documents = Vec::new();
        for (i, c) in cities.iter().enumerate() {
            let natives: Vec<&str> = people
                .iter()
                .filter(|p| p.born_in == i)
                .take(3)
                .map(|p| p.name.as_str())
                .collect();
            let mut body = format!(
                "{} is a city in {}, founded around the year {}. The {} flows through {}.",
                c.name, c.country, c.founded, c.river, c.name
            );
            if !natives.is_empty() {
                body.push_str(&format!(
                    " Notable people born in {} include {}.",
                    c.name,
                    natives.join(", ")
                ));
            }
            documents.push(Document {
                id: format!("city-{i}"),
                title: c.name.clone(),
                body,
            });
        }
        for (i, p) in people.iter().enumerate() {
            let city = &cities[p.born_in];
            let mut body = format!(
                "{} (born {}) is a {} who was born in the city of {}.",
                p.name, p.born_year, p.profession, city.name
            );
            if let Some(c) = companies.iter().find(|c| c.founder == i) {
                body.push_str(&format!(
                    " In {} {} founded {}, a {} company.",
                    c.founded, p.name, c.name, c.industry
                ));
            } else {
                body.push_str(&format!(
                    " {} has worked for several firms and writes about {}.",
                    p.name,
                    INDUSTRIES[i % INDUSTRIES.len()]
                ));
            }
            documents.push(Document {
                id: format!("person-{i}"),
                title: p.name.clone(),
                body,
            });
        }
        for (i, c) in companies.iter().enumerate() {
            let made: Vec<String> = products
                .iter()
                .filter(|p| p.maker == i)
                .take(4)
                .map(|p| p.name.clone())
                .collect();
            let mut body = format!(
                "{} is a {} company founded in {} by {}. Its headquarters are in {}.",
                c.name, c.industry, c.founded, people[c.founder].name, cities[c.hq].name
            );
            if !made.is_empty() {
                body.push_str(&format!(" Its products include {}.", made.join(", ")));
            }
            documents.push(Document {
                id: format!("company-{i}"),
                title: c.name.clone(),
                body,
            });
        }
        for (i, p) in products.iter().enumerate() {
            let title = cap(p.name.trim_start_matches("the "));
            let body = format!(
                "{} is a {} introduced in {}. It is manufactured by {}.",
                cap(&p.name),
                p.category,
                p.year,
                companies[p.maker].name
            );
            documents.push(Document {
                id: format!("product-{i}"),
                title,
                body,
            });
        }
        let by_id = documents
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Corpus {
            seed,
            cities,
            people,
            companies,
            products,
            documents,
            by_id,
        }
    }

    pub fn document(&self, id: &str) -> Option<&Document> {
        self.by_id.get(id).map(|&i| &self.documents[i])
    }

    fn product_title(&self, i: usize) -> String {
        self.products[i].name.trim_start_matches("the ").to_string()
    }

    /// The question, gold answer and supporting document ids of a task template.
    pub fn question(&self, template: &str, entity: usize) -> Option<Question> {
        match template {
            "product_founder" => {
                let p = self.products.get(entity)?;
                let c = &self.companies[p.maker];
                Some(Question {
                    text: format!(
                        "Who founded the company that manufactures the {}?",
                        self.product_title(entity)
                    ),
                    answer: self.people[c.founder].name.clone(),
                    support: vec![format!("product-{entity}"), format!("company-{}", p.maker)],
                })
            }
            "product_founder_birthplace" => {
                let p = self.products.get(entity)?;
                let c = &self.companies[p.maker];
                let person = &self.people[c.founder];
                Some(Question {
                    text: format!(
                        "In which city was the founder of the company that manufactures the {} born?",
                        self.product_title(entity)
                    ),
                    answer: self.cities[person.born_in].name.clone(),
                    support: vec![
                        format!("product-{entity}"),
                        format!("company-{}", p.maker),
                        format!("person-{}", c.founder),
                    ],
                })
            }
            "product_hq_country" => {
                let p = self.products.get(entity)?;
                let c = &self.companies[p.maker];
                Some(Question {
                    text: format!(
                        "In which country is the headquarters city of the company that manufactures the {}?",
                        self.product_title(entity)
                    ),
                    answer: self.cities[c.hq].country.clone(),
                    support: vec![
                        format!("product-{entity}"),
                        format!("company-{}", p.maker),
                        format!("city-{}", c.hq),
                    ],
                })
            }
            "person_birthplace_river" => {
                let person = self.people.get(entity)?;
                Some(Question {
                    text: format!(
                        "Which river flows through the city where {} was born?",
                        person.name
                    ),
                    answer: self.cities[person.born_in].river.clone(),
                    support: vec![
                        format!("person-{entity}"),
                        format!("city-{}", person.born_in),
                    ],
                })
            }
            _ => None,
        }
    }

    /// All (template, entity) pairs of a split; train and test are disjoint by entity.
    pub(crate) fn pool(&self, split: &str) -> Vec<(&'static str, usize)> {
        let test = split == "test";
        let in_split = |i: usize| i.is_multiple_of(5) == test;
        let mut out = Vec::new();
        for i in (0..self.products.len()).filter(|&i| in_split(i)) {
            out.push(("product_founder", i));
            out.push(("product_founder_birthplace", i));
            out.push(("product_hq_country", i));
        }
        for i in (0..self.people.len()).filter(|&i| in_split(i)) {
            out.push(("person_birthplace_river", i));
        }
        out
    }
}

/// A question with its gold answer and supporting documents.
#[derive(Debug, Clone)]
pub struct Question {
    pub text: String,
    pub answer: String,
    pub support: Vec<String>,
}

/// SQuAD-style normalisation: lowercase, drop punctuation and the articles a/an/the,
/// collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `answer` matches `gold` by normalised exact match. An answer may also end with
/// `Answer: X` (only X is compared then).
pub fn answer_matches(answer: &str, gold: &str) -> bool {
    let gold = normalize_answer(gold);
    if gold.is_empty() {
        return false;
    }
    if normalize_answer(answer) == gold {
        return true;
    }
    // Index into the lowercased text itself: lowercasing can change byte lengths ("İ"), so
    // its offsets do not apply to `answer`. Normalisation lowercases anyway.
    let lower = answer.to_lowercase();
    lower
        .rfind("answer:")
        .is_some_and(|i| normalize_answer(&lower[i + "answer:".len()..]) == gold)
}

// ---------------------------------------------------------------- index

/// How many corpus indexes [`SearchIndex::shared`] keeps.
pub const MAX_CACHED_INDEXES: usize = 8;

/// Cached indexes by corpus seed, most recently used last.
type IndexCache = Mutex<Vec<(u64, Arc<SearchIndex>)>>;
static INDEX_CACHE: OnceLock<IndexCache> = OnceLock::new();

/// A BM25 index of a corpus (tantivy, in RAM).
pub struct SearchIndex {
    pub corpus: Arc<Corpus>,
    index: Index,
    reader: IndexReader,
    id: Field,
    title: Field,
    body: Field,
}

/// One search hit.
#[derive(Debug, Clone)]
pub struct Hit {
    pub id: String,
    pub title: String,
    pub snippet: String,
    pub score: f32,
}

impl SearchIndex {
    /// Indexes `corpus` in memory.
    pub fn build(corpus: Arc<Corpus>) -> Result<SearchIndex, SearchError> {
        let mut sb = Schema::builder();
        let id = sb.add_text_field("id", STRING | STORED);
        let title = sb.add_text_field("title", TEXT | STORED);
        let body = sb.add_text_field("body", TEXT | STORED);
        let index = Index::create_in_ram(sb.build());
        let mut writer = index
            .writer_with_num_threads::<TantivyDocument>(1, 15_000_000)
            .map_err(|e| format!("cannot create the index writer: {e}"))?;
        for d in &corpus.documents {
            writer
                .add_document(
                    doc!(id => d.id.clone(), title => d.title.clone(), body => d.body.clone()),
                )
                .map_err(|e| format!("cannot index {}: {e}", d.id))?;
        }
        writer
            .commit()
            .map_err(|e| format!("cannot commit the index: {e}"))?;
        let reader = index
            .reader()
            .map_err(|e| format!("cannot open the index: {e}"))?;
        Ok(SearchIndex {
            corpus,
            index,
            reader,
            id,
            title,
            body,
        })
    }

    /// The shared index a suite draws its tasks from; `None` (logged) when the corpus cannot
    /// be built, so the suite lists no tasks rather than failing.
    pub fn shared_for_tasks(seed: u64) -> Option<Arc<SearchIndex>> {
        SearchIndex::shared(seed)
            .map_err(|e| tracing::error!("search corpus unavailable: {e}"))
            .ok()
    }

    /// The index an episode of `task` searches: its `env.corpus_seed`, else `default_seed`.
    pub fn for_task(task: &Task, default_seed: u64) -> Result<Arc<SearchIndex>, EnvError> {
        let seed = task.env["corpus_seed"].as_u64().unwrap_or(default_seed);
        SearchIndex::shared(seed).map_err(|e| EnvError::Setup(e.to_string()))
    }

    /// The shared index of the corpus generated from `seed`. Up to [`MAX_CACHED_INDEXES`]
    /// indexes stay cached (least recently used evicted: a remote client chooses seeds), and
    /// a build runs outside the cache lock so a failing build cannot poison it.
    pub fn shared(seed: u64) -> Result<Arc<SearchIndex>, SearchError> {
        let cache = INDEX_CACHE.get_or_init(Default::default);
        let lock = || {
            cache
                .lock()
                .map_err(|_| "search index cache poisoned".to_string())
        };
        {
            let mut entries = lock()?;
            if let Some(pos) = entries.iter().position(|(s, _)| *s == seed) {
                let entry = entries.remove(pos);
                let ix = entry.1.clone();
                entries.push(entry);
                return Ok(ix);
            }
        }
        let ix = Arc::new(SearchIndex::build(Arc::new(Corpus::generate(seed)))?);
        let mut entries = lock()?;
        if let Some((_, existing)) = entries.iter().find(|(s, _)| *s == seed) {
            return Ok(existing.clone());
        }
        entries.push((seed, ix.clone()));
        if entries.len() > MAX_CACHED_INDEXES {
            entries.remove(0);
        }
        Ok(ix)
    }

    /// The `k` best documents for `query` by BM25 over title and body.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, SearchError> {
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.title, self.body]);
        // Lenient: the model's query is free text, never a syntax error.
        let (q, _errors) = parser.parse_query_lenient(query);
        let top = searcher
            .search(&q, &TopDocs::with_limit(k.max(1)).order_by_score())
            .map_err(|e| format!("search failed: {e}"))?;
        let snippets = SnippetGenerator::create(&searcher, &*q, self.body).ok();
        let mut hits = Vec::new();
        for (score, addr) in top {
            let d: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| format!("cannot load a hit: {e}"))?;
            let get = |f: Field| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let body = get(self.body);
            let snippet = snippets
                .as_ref()
                .map(|g| g.snippet(&body).fragment().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| body.chars().take(150).collect());
            hits.push(Hit {
                id: get(self.id),
                title: get(self.title),
                snippet,
                score,
            });
        }
        Ok(hits)
    }
}

// ---------------------------------------------------------------- tools

#[derive(Default)]
struct Trace {
    read: Vec<String>,
    queries: Vec<String>,
}

type Shared = Arc<Mutex<Trace>>;

fn lock(t: &Shared) -> Result<std::sync::MutexGuard<'_, Trace>, ToolError> {
    t.lock()
        .map_err(|_| ToolError::new("search state is unavailable (internal error)"))
}

struct SearchTool(Arc<SearchIndex>, Shared);
struct ReadTool(Arc<SearchIndex>, Shared);

#[async_trait]
impl Tool for SearchTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "search".into(),
            description: "Search the document collection (BM25). Returns ranked document ids, titles and snippets.".into(),
            parameters: json!({"type":"object","properties":{
                "query":{"type":"string","minLength":1,"maxLength":500,"description":"keywords"},
                "k":{"type":"integer","minimum":1,"maximum":10,"description":"number of results (default 5)"}
            },"required":["query"],"additionalProperties":false}),
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let q = a["query"].as_str().unwrap_or_default();
        let k = a["k"].as_u64().unwrap_or(5) as usize;
        lock(&self.1)?.queries.push(q.to_string());
        let hits = self
            .0
            .search(q, k)
            .map_err(|e| ToolError::new(e.to_string()))?;
        if hits.is_empty() {
            return Ok(format!("no documents match \"{q}\"; try other keywords"));
        }
        Ok(hits
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{}. [{}] {}\n   {}", i + 1, h.id, h.title, h.snippet))
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

#[async_trait]
impl Tool for ReadTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_document".into(),
            description: "Read a whole document by its id (as shown by search, e.g. company-3)."
                .into(),
            parameters: json!({"type":"object","properties":{
                "id":{"type":"string","minLength":1,"maxLength":100}
            },"required":["id"],"additionalProperties":false}),
        }
    }
    async fn call(&self, a: Value) -> Result<String, ToolError> {
        let id = a["id"].as_str().unwrap_or_default().trim();
        let d = self.0.corpus.document(id).ok_or_else(|| {
            ToolError::new(format!(
                "no document \"{id}\"; use the ids that search returns (like person-4)"
            ))
        })?;
        lock(&self.1)?.read.push(d.id.clone());
        Ok(format!("# {}\n\n{}", d.title, d.body))
    }
}

// ---------------------------------------------------------------- environment

const SYSTEM: &str = "You answer questions by searching a document collection. Use search to find documents and read_document to read them; follow the facts from document to document. Reply with only the answer (a name), no explanation.";

/// The `search` environment for one episode.
pub struct SearchEnv {
    conv: ToolConversation,
    trace: Shared,
    system: &'static str,
}

impl SearchEnv {
    /// The environment with another system prompt (`multisearch`).
    pub fn with_system(mut self, system: &'static str) -> Self {
        self.system = system;
        self
    }

    pub fn new(index: Arc<SearchIndex>) -> Self {
        let trace: Shared = Arc::default();
        let mut tools = ToolBox::new();
        tools.add(Arc::new(SearchTool(index.clone(), trace.clone())));
        tools.add(Arc::new(ReadTool(index, trace.clone())));
        SearchEnv {
            conv: ToolConversation::new(tools),
            trace,
            system: SYSTEM,
        }
    }
}

#[async_trait]
impl Environment for SearchEnv {
    async fn reset(&mut self, task: &Task) -> Result<Reset, EnvError> {
        let reset = self.conv.start(self.system, task.prompt.clone());
        *lock(&self.trace).map_err(|e| EnvError::Setup(e.0))? = Trace::default();
        Ok(reset)
    }

    async fn step(&mut self, action: Action) -> Result<StepOutcome, EnvError> {
        self.conv.step(action).await
    }

    async fn submission(&mut self) -> Result<Submission, EnvError> {
        let t = lock(&self.trace).map_err(|e| EnvError::Step(e.0))?;
        Ok(self
            .conv
            .submission(Some(json!({"read": t.read, "queries": t.queries})), None))
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.conv.close();
        Ok(())
    }
}

fn task_question(task: &Task) -> Result<(Arc<SearchIndex>, Question), String> {
    let seed = task.env["corpus_seed"]
        .as_u64()
        .ok_or_else(|| format!("task {} has no env.corpus_seed", task.id))?;
    let template = task.env["template"]
        .as_str()
        .ok_or_else(|| format!("task {} has no env.template", task.id))?;
    let entity = task.env["entity"]
        .as_u64()
        .ok_or_else(|| format!("task {} has no env.entity", task.id))? as usize;
    let index = SearchIndex::shared(seed).map_err(|e| e.to_string())?;
    let q = index.corpus.question(template, entity).ok_or_else(|| {
        format!(
            "task {}: unknown template {template} or entity {entity}",
            task.id
        )
    })?;
    Ok((index, q))
}

/// Grades a `search` submission: reward by normalised exact match; progress counts the
/// supporting documents read and the answer.
pub struct SearchVerifier;

#[async_trait]
impl Verifier for SearchVerifier {
    async fn verify(&self, task: &Task, sub: &Submission) -> Result<Verdict, VerifyError> {
        let (_, q) = task_question(task).map_err(VerifyError::Malformed)?;
        let answer = sub.final_answer.clone().unwrap_or_default();
        let ok = answer_matches(&answer, &q.answer);
        let read: HashSet<String> = sub
            .state
            .as_ref()
            .and_then(|s| s["read"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let found = q.support.iter().filter(|d| read.contains(*d)).count();
        let mut v = Verdict::from_checks(vec![CheckResult::new(
            "answer_exact_match",
            ok,
            format!(
                "got {:?} (normalised {:?})",
                answer,
                normalize_answer(&answer)
            ),
        )]);
        let subgoals = (found + usize::from(ok)) as f64 / (q.support.len() + 1) as f64;
        v.progress = if ok { 1.0 } else { subgoals };
        v.components = BTreeMap::from([
            ("answer".to_string(), if ok { 1.0 } else { 0.0 }),
            (
                "evidence".to_string(),
                found as f64 / q.support.len().max(1) as f64,
            ),
        ]);
        Ok(v)
    }
}

/// The `search` task suite.
pub struct SearchSuite {
    pub corpus_seed: u64,
}

impl Default for SearchSuite {
    fn default() -> Self {
        SearchSuite {
            corpus_seed: DEFAULT_CORPUS_SEED,
        }
    }
}

impl Suite for SearchSuite {
    fn name(&self) -> &str {
        "search"
    }

    fn description(&self) -> &str {
        "multi-hop questions over a local corpus with BM25 search (tantivy) and read_document"
    }

    fn tasks(&self, split: &str, count: usize, seed: u64) -> Vec<Task> {
        let Some(index) = SearchIndex::shared_for_tasks(self.corpus_seed) else {
            return Vec::new();
        };
        let pool = index.corpus.pool(split);
        let stream = split_stream(split, 0x7e57, 0x7a1e);
        let mut rng = SeededRng::new(seed ^ (stream << 32) ^ 0x5ea4);
        (0..count)
            .filter_map(|i| {
                let (template, entity) = pool[rng.below(pool.len() as u64) as usize];
                let q = index.corpus.question(template, entity)?;
                Some(generated_task(
                    "search",
                    split,
                    seed,
                    i,
                    q.text,
                    json!({"kind": "search", "corpus_seed": self.corpus_seed, "template": template, "entity": entity}),
                ))
            })
            .collect()
    }

    fn make(&self, task: &Task) -> Result<Box<dyn Environment>, EnvError> {
        let index = SearchIndex::for_task(task, self.corpus_seed)?;
        Ok(Box::new(SearchEnv::new(index)))
    }

    fn verifier(&self) -> Arc<dyn Verifier> {
        Arc::new(SearchVerifier)
    }

    fn reference_solution(&self, task: &Task) -> Option<Vec<String>> {
        let (index, q) = task_question(task).ok()?;
        let mut turns = vec![hermes_call_turn(
            "I will search for the entity named in the question.",
            "search",
            &json!({"query": task.prompt, "k": 5}),
        )];
        for id in &q.support {
            let title = index.corpus.document(id)?.title.clone();
            turns.push(hermes_call_turn(
                &format!("Next I read the document about {title}."),
                "read_document",
                &json!({"id": id}),
            ));
        }
        turns.push(q.answer);
        Some(turns)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn answer_prefix_after_length_changing_lowercase_does_not_panic() {
        assert!(!answer_matches("İİİanswer: x", "y"));
        assert!(answer_matches("İİİanswer: x", "x"));
    }

    #[test]
    fn the_index_cache_is_bounded() {
        for seed in 0..(MAX_CACHED_INDEXES as u64 + 2) {
            SearchIndex::shared(1000 + seed).unwrap();
        }
        let len = INDEX_CACHE.get().unwrap().lock().unwrap().len();
        assert!(len <= MAX_CACHED_INDEXES, "{len}");
    }

    #[test]
    fn normalises_like_squad() {
        assert_eq!(normalize_answer("  The Kalo River! "), "kalo river");
        assert!(answer_matches("the kalo river.", "Kalo River"));
        assert!(answer_matches(
            "I think... Answer: Kalo River",
            "Kalo River"
        ));
        assert!(!answer_matches("Kalo", "Kalo River"));
        assert!(!answer_matches("", "x"));
    }

    #[test]
    fn corpus_is_deterministic_and_indexed_fast() {
        let a = Corpus::generate(7);
        let b = Corpus::generate(7);
        assert_eq!(a.documents.len(), b.documents.len());
        assert_eq!(a.documents[5].body, b.documents[5].body);
        assert!(a.documents.len() >= 250);
        let t = std::time::Instant::now();
        let ix = SearchIndex::build(Arc::new(a)).unwrap();
        assert!(t.elapsed().as_secs_f64() < 5.0, "{:?}", t.elapsed());
        let q = ix.corpus.question("product_founder_birthplace", 3).unwrap();
        assert_eq!(q.support.len(), 3);
        // The product document ranks first for its own name.
        let title = ix.corpus.document(&q.support[0]).unwrap().title.clone();
        let hits = ix.search(&title, 3).unwrap();
        assert_eq!(hits[0].id, q.support[0], "{hits:?}");
    }

    #[test]
    fn splits_are_disjoint() {
        let s = SearchSuite::default();
        let train: HashSet<String> = s
            .tasks("train", 200, 1)
            .iter()
            .map(|t| t.env.to_string())
            .collect();
        let test: HashSet<String> = s
            .tasks("test", 200, 1)
            .iter()
            .map(|t| t.env.to_string())
            .collect();
        assert!(train.is_disjoint(&test));
    }
}
