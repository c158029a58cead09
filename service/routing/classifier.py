"""The task classifier: what kind of task a prompt is, and how hard, without calling a model.

Features are read from the prompt's text and the requested output size: its length, code
fences and code-like lines, mathematics, reasoning cues, how many constraints it lists, words
that mark depth or stakes, and words that mark a quick job. The kind is the strongest signal
(code, maths, reasoning, extraction, summarisation, translation, writing; chat otherwise); the
complexity is a score from the rest. Classifying is pure string work (well under a millisecond
for ordinary prompts) so it runs on every ``auto`` request before it is priced.

When in doubt it errs upwards: sending a hard task to a weak model fails the agent, while
sending an easy one to a strong model only costs more. The policy's ``[classes]`` table maps
each class (``kind.complexity`` or ``kind``) to a tier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

KINDS = (
    "chat",
    "extraction",
    "summarisation",
    "translation",
    "writing",
    "code",
    "maths",
    "reasoning",
)
COMPLEXITIES = ("simple", "moderate", "complex")


def _words(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")", re.IGNORECASE)


_LANGUAGES = (
    r"python|javascript|typescript|golang|rust|java|c\+\+|c#|kotlin|swift|ruby|php|bash|"
    r"powershell|sql|html|css|react|vue|django|flask|pandas|numpy|node\.?js|express"
)
_FENCE = re.compile(r"```")
_MATERIAL = re.compile(r":\s|['\"\u2018\u201c]\w|```")
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)
# Possessive leading whitespace and no line-crossing wildcards: linear on any input (a body of
# a megabyte of spaces must not stall the event loop).
_LIST_ITEM = re.compile(r"^[ \t]*+(?:\d+[.)]|[-*•])[ \t]+\S", re.MULTILINE)
_CODE_LINE = re.compile(
    r"^[ \t]*+(?:def |class |import |from \S+ import|return\b|if \(|for \(|while \(|#include|"
    r"public |private |func |fn |let |const |var |SELECT |INSERT |UPDATE |CREATE TABLE|"
    r"\}|\{$|[^\n]*;[ \t]*$|[^\n]*\)[ \t]*\{$|<\w+[ >])",
    re.MULTILINE,
)
_CODE_ASK = _words(
    rf"(?:{_LANGUAGES})\b",
    r"in c\b",
    r"in go\b",
    r"go (?:function|program|http|handler|struct|routine|module)",
    r"handler\b",
    r"regex",
    r"regular expression",
    r"dockerfile",
    r"kubernetes",
    r"yaml\b",
    r"makefile",
    r"terraform",
    r"github actions",
    r"git\b",
    r"function\b",
    r"implement",
    r"refactor",
    r"debug",
    r"stack ?trace",
    r"traceback",
    r"compil",
    r"unit tests?",
    r"code review",
    r"this code",
    r"the code",
    r"snippet",
    r"script\b",
    r"query\b",
    r"component\b",
    r"dataframe",
    r"api endpoint",
    r"segfault",
    r"exception\b",
)
_MATHS = _words(
    r"solve",
    r"equations?",
    r"integral",
    r"integrate",
    r"derivative",
    r"differentiate",
    r"probability",
    r"expected (?:value|number)",
    r"without replacement",
    r"prove\b",
    r"proof",
    r"show that",
    r"theorem",
    r"matrix",
    r"eigen",
    r"prime\b",
    r"divisible",
    r"how many\b",
    r"calculat",
    r"compute\b",
    r"compound",
    r"factorial",
    r"modulo",
    r"combinatori",
    r"variance",
    r"standard deviation",
    r"squared?\b",
    r"sum of",
    r"show (?:your |the )?(?:working|calculation|steps)",
    r"reason (?:carefully|it out|it through|through)",
    r"puzzle",
    r"riddle",
    r"knights?\b",
    r"knaves?\b",
    r"deduce",
    r"how long does it take",
    r"km/h",
    r"mph\b",
)
#: Words that make a prompt mathematics on their own.
_PROOF = _words(
    r"prove\b",
    r"proofs?\b",
    r"theorem",
    r"probability",
    r"integral",
    r"derivative",
    r"equations?",
    r"eigen",
    r"show that",
    r"formula",
)
_ARITHMETIC = re.compile(
    r"\d\s*[+*^=\u00d7\u00f7]\s*\(?\d|\d\s+[-/]\s+\d|\b\d?[xyn]\s*[\^\u00b2=+]|\\frac|"
    r"\u221a|\u2211|\u222b"
)
_NUMBER = re.compile(r"(?<![\w-])\$?\d[\d,.]*%?")
_REASONING = _words(
    r"why\b",
    r"step by step",
    r"step-by-step",
    r"reason",
    r"trade-?offs?",
    r"pros and cons",
    r"compare",
    r"comparison",
    r"which (?:is|would be) better",
    r"should (?:i|we)\b",
    r"evaluate",
    r"analy[sz]e",
    r"analysis",
    r"plan\b",
    r"strategy",
    r"root cause",
    r"diagnos",
    r"logic",
    r"infer",
    r"what would happen",
    r"implications?",
    r"argue",
    r"critique",
    r"assess",
    r"decide",
    r"recommend(?:ation)?\b",
    r"design\b",
)
_EXTRACTION = _words(
    r"extract",
    r"pull out",
    r"list (?:all|every|the)",
    r"parse",
    r"(?:return|output|respond|answer) (?:only )?(?:in |with |as )?(?:valid )?json",
    r"as json",
    r"json (?:object|list)",
    r"classify",
    r"categori[sz]e",
    r"label (?:each|these|this)",
    r"tag (?:this|each|these)",
    r"sentiment",
    r"which (?:category|language|department)",
    r"language is this",
    r"detect the language",
    r"fill in",
    r"find the (?:dates?|names?|emails?|phone numbers?|numbers?|amounts?)",
    r"identify (?:the|all)",
    r"is this (?:message )?(?:spam|positive|negative)",
    r"positive or negative",
    r"yes or no",
    r"normali[sz]e",
    r"convert (?:this|these|the)",
    r"remove duplicates",
    r"sort these",
    r"count the",
)
_SUMMARY = _words(
    r"summar",
    r"tl;?dr",
    r"key (?:points|takeaways)",
    r"main points",
    r"condense",
    r"shorten",
    r"gist",
    r"recap",
)
_TRANSLATION = _words(
    r"translat(?:e|ion)\b",
    r"into (?:english|french|german|spanish|italian|portuguese|japanese|chinese|korean|dutch"
    r"|russian|arabic|polish|swedish|turkish|hindi)",
    r"how do you say",
    r"what does '.*' mean in",
)
_WRITING = _words(
    r"write (?:a|an|me a|me an|the)\b",
    r"draft",
    r"rewrite",
    r"rephrase",
    r"proofread",
    r"polish",
    r"edit (?:this|my)",
    r"fix the spelling",
    r"make this (?:sentence )?more",
    r"poem",
    r"haiku",
    r"story",
    r"essay",
    r"blog post",
    r"cover letter",
    r"email",
    r"slogan",
    r"tagline",
    r"headline",
    r"speech",
    r"toast\b",
    r"press release",
    r"op-ed",
)
#: Pieces of writing that take a capable model to do well.
_SUBSTANTIAL = _words(
    r"e-?mail\b",
    r"cover letter",
    r"blog post",
    r"linkedin post",
    r"newsletter",
    r"speech",
    r"toast\b",
    r"story",
    r"essay",
    r"article",
    r"job advert",
    r"about us",
    r"product description",
    r"press release",
    r"reply to a customer",
    r"firm\b",
    r"professional",
    r"(?:formal|informal|warm|friendly|professional|polite) (?:tone|register)",
    r"keeping (?:a|the) .{0,30}tone",
    r"for (?:new |our |the |my )?(?:members|customers|clients|residents|team|staff|employees|"
    r"readers|users|audience|investors|parents)",
)
#: Asking for an explanation, advice or a plan rather than a fact.
_EXPLAIN = _words(
    r"explain",
    r"describe",
    r"how (?:does|do) .{0,40} work",
    r"what are (?:the )?(?:main |key )?(?:differences|symptoms|rules|pros|ways|features)",
    r"what's the difference",
    r"how (?:do|does) .{0,30} differ",
    r"what are (?:the )?(?:main |key |common )?causes",
    r"guide\b",
    r"what should i",
    r"give me (?:ideas|tips|talking points|a .{0,20}plan|\w+ interview questions)",
    r"ideas for",
    r"itinerary",
    r"meal plan",
    r"packing list",
    r"checklist",
    r"evidence-based",
    r"arguments for and against",
    r"for and against",
    r"decisions, action items",
    r"pros and cons",
    r"compare",
)
#: Depth, rigour or stakes that call for the strongest models (counted twice).
_STAKES = _words(
    r"rigorous",
    r"formally",
    r"in depth",
    r"in-depth",
    r"comprehensive",
    r"thorough",
    r"exhaustive",
    r"distributed",
    r"concurren",
    r"race conditions?",
    r"deadlock",
    r"lock-free",
    r"thread[- ]safe",
    r"security review",
    r"vulnerab",
    r"threat model",
    r"cryptograph",
    r"zero-downtime",
    r"legal",
    r"liabilit",
    r"regulat",
    r"complian",
    r"gdpr",
    r"medical",
    r"clinical",
    r"patient",
    r"prescri",
    r"tax\b",
    r"investment",
    r"valuation",
    r"financial model",
    r"board\b",
    r"negotiat",
    r"strateg",
    r"research-style",
    r"literature review",
    r"subtle",
    r"nuanc",
    r"software architecture",
    r"system design",
    r"design (?:a|an|the) (?:[\w-]+ ){0,2}(?:system|service|protocol|schema|database|api|"
    r"algorithm|caching|architecture|pipeline|platform)",
    r"audit\b",
    r"design document",
    r"post-mortem",
    r"root cause",
    r"failure modes?",
    r"trade-?offs?",
    r"edge cases?",
    r"intermittent",
    r"plausible causes",
    r"fraud",
    r"adversar",
    r"secur(?:e|ity)\b",
    r"breach",
    r"exploit",
    r"flaws?\b",
    r"incident",
    r"outage",
    r"idempoten",
    r"walk (?:me )?through",
)
#: Things a prompt asks to be done; several in one prompt make a bigger job.
_TASK_VERBS = _words(
    r"analy[sz]e",
    r"explain",
    r"list\b",
    r"propose",
    r"design",
    r"compare",
    r"review",
    r"assess",
    r"evaluate",
    r"recommend",
    r"plan\b",
    r"diagnose",
    r"investigate",
    r"identify",
    r"outline",
    r"estimate",
    r"prove",
    r"walk (?:me )?through",
    r"flag",
    r"critique",
)
#: Weight that calls for more than the cheapest model (counted once).
_WEIGHT = _words(
    r"detailed",
    r"optimi[sz]",
    r"performance",
    r"latency",
    r"production",
    r"migration",
    r"scalab",
    r"at scale",
    r"per second",
    r"millions",
    r"legacy",
    r"testable",
    r"novel\b",
    r"derive",
    r"report\b",
    r"roadmap",
    r"persuasive",
    r"op-ed",
    r"chapter",
    r"multi-?step",
    r"critique",
    r"experimental design",
    r"scenarios",
    r"recommend(?:ation)? ",
    r"rebut",
    r"propose",
)
#: A quick job: each one lowers the score.
_EASY = _words(
    r"quick(?:ly)?\b",
    r"brief(?:ly)?\b",
    r"one[- ]word",
    r"one sentence",
    r"one[- ]line",
    r"single (?:word|sentence|line)",
    r"just one",
    r"yes or no",
    r"a few words",
    r"in (?:one|two|a few) sentences?",
    r"under \d+ words",
)
_SIZE = re.compile(
    r"\b(?:about |around |roughly |at least )?(\d[\d,]{1,6})[- ]words?\b|"
    r"(paragraphs)|about (\d+) minutes",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Features:
    """What the classifier read from a prompt (recorded on the task with its class)."""

    chars: int  # the whole prompt
    ask_chars: int  # the last message, the agent's own words
    output_tokens: int | None  # max_tokens, when the caller set it
    code_fences: int
    code_lines: int
    code_asks: int
    maths: int
    proof: int
    numbers: int
    reasoning: int
    extraction: int
    summary: int
    translation: int
    writing: int
    substantial: int
    explain: int
    stakes: int
    tasks: int  # distinct things asked: analyse, list, propose, ...
    weight: int
    easy: int
    aspects: int  # things the prompt asks to cover (commas and list items)
    material: bool  # the prompt carries text to work on (quoted, or after a colon)
    words_asked: int  # an answer length the prompt names, in words


@dataclass(frozen=True, slots=True)
class TaskClass:
    kind: str
    complexity: str
    score: int
    features: Features

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.complexity}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "complexity": self.complexity,
            "score": self.score,
            "features": asdict(self.features),
        }


def _size_asked(text: str) -> int:
    words = 0
    for match in _SIZE.finditer(text):
        count, paragraphs, minutes = match.groups()
        if count:
            words = max(words, int(count.replace(",", "")))
        elif paragraphs:
            words = max(words, 250)
        elif minutes:
            words = max(words, 130 * int(minutes))
    return words


def features(texts: Sequence[str], output_tokens: int | None = None) -> Features:
    """Read the features of a prompt: the texts of its messages, and its ``max_tokens``."""
    text = "\n".join(texts)
    ask = texts[-1] if texts else ""
    # What the agent asks is in its own words, at the start or the end of its message; a
    # pasted document in between should not drown them.
    head = ask if len(ask) <= 700 else ask[:500] + "\n" + ask[-200:]
    prose = _FENCED.sub(" ", head)
    return Features(
        chars=len(text),
        ask_chars=len(ask),
        output_tokens=output_tokens,
        code_fences=len(_FENCE.findall(text)) // 2,
        code_lines=len(_CODE_LINE.findall(text)),
        code_asks=len(_CODE_ASK.findall(prose)),
        maths=len(_MATHS.findall(prose)) + len(_ARITHMETIC.findall(prose)),
        proof=len(_PROOF.findall(prose)),
        numbers=len(_NUMBER.findall(prose)),
        reasoning=len(_REASONING.findall(prose)),
        extraction=len(_EXTRACTION.findall(prose)),
        summary=len(_SUMMARY.findall(prose)),
        translation=len(_TRANSLATION.findall(prose)),
        writing=len(_WRITING.findall(prose)),
        substantial=len(_SUBSTANTIAL.findall(prose)),
        explain=len(_EXPLAIN.findall(prose)),
        stakes=len({m.lower() for m in _STAKES.findall(prose)}),
        tasks=len({m.lower() for m in _TASK_VERBS.findall(prose)}),
        weight=len({m.lower() for m in _WEIGHT.findall(prose)}),
        easy=len(_EASY.findall(prose)),
        aspects=prose.count(",") + len(_LIST_ITEM.findall(prose)),
        material=bool(_MATERIAL.search(ask)),
        words_asked=_size_asked(prose),
    )


def _kind(f: Features) -> str:
    if f.code_fences or f.code_lines >= 3:
        return "code"
    if f.code_asks >= 2:
        return "code"
    light = f.stakes < 2  # a job with stakes is never a light one
    if light and f.translation:
        return "translation"
    if light and f.summary and f.summary >= f.reasoning:
        return "summarisation"
    if light and f.extraction and f.extraction > f.reasoning + f.maths:
        return "extraction"
    if f.code_asks:
        return "code"
    maths = f.proof or f.maths >= 2 or (f.maths and (f.reasoning or f.numbers))
    if maths and not f.stakes:  # "prove which bug it is" in an incident is not mathematics
        return "maths"
    if f.reasoning >= 2 or (f.reasoning and f.stakes):
        return "reasoning"
    if f.writing:
        return "writing"
    if f.reasoning:
        return "reasoning"
    return "chat"


def _score(kind: str, f: Features) -> int:
    score = 2 * f.stakes + f.weight + min(1, f.substantial) + min(1, f.explain)
    score += f.stakes > 0 and f.aspects >= 3  # many sides of a weighty question
    score += f.tasks >= 3  # several things asked at once
    asked = max(f.words_asked, int((f.output_tokens or 0) * 0.75))
    score += (asked >= 150) + (asked >= 800)
    if kind in ("extraction", "summarisation", "translation"):
        # Here the prompt is mostly the material: only a long one makes the job bigger...
        score += f.ask_chars > 600
        # ...unless there is none: summarising a topic from knowledge is explaining it.
        score += kind == "summarisation" and not f.material
    else:
        score += (f.ask_chars > 350) + (f.ask_chars > 1500) + (f.chars > 6000)
        score += f.aspects >= 6
    return score - min(2, f.easy)


def classify(texts: Sequence[str], output_tokens: int | None = None) -> TaskClass:
    """The class of a prompt, from the texts of its messages and its requested output size."""
    f = features(texts, output_tokens)
    kind = _kind(f)
    score = _score(kind, f)
    complexity = "simple" if score <= 0 else "moderate" if score <= 2 else "complex"
    return TaskClass(kind, complexity, score, f)
