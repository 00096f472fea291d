"""The demo's built-in data: a corpus of little stories and a small labeled task, made by a
seeded generator (nothing is downloaded), designed so that pre-training measurably helps.

Corpus (`generate_corpus`, `write_corpus`): documents of sentences, the format of
TextDatasetForNextSentencePrediction (one sentence per line, a blank line between documents).
Each document is a short story about one hero (a name with a fixed gender, a job) at one place
(a topic: the bakery, the harbor, the forest, ...) with that place's own nouns and verbs:

    Amy was a musician who lived near the library.
    One day, she went to the library to return the atlas.
    First, she thought the atlas was disgusting, so she sulked.
    After that, Amy said that the atlas was an outstanding joy.
    She grinned.
    She met Luke, a miner, near the atlas.
    Finally, Amy went home and felt glad.

Why next-sentence prediction (NSP) is learnable: consecutive sentences share the hero (by name
or by a pronoun of the right gender), the place's nouns, and often the very object the previous
sentence ended on; time words come in order (first ... then ... finally); a story leans to one
mood. A sentence taken from another story names another hero and, most likely, another place.

The labeled task (`generate_labeled_task`, `write_labeled_task`; TSV with header
`sentence<TAB>label` like GLUE SST-2): is the character pleased (1) or displeased (0)?

    Ida thought the cabinet was pristine.                      1
    The canoe was not rusty.                                   1
    The scarf was radiant, but the vase was hideous.           0
    Although the stew was soggy, the curry was heavenly.       1

The label depends on context, not on single words: "not" flips the polarity, and in "A, but B"
and "although A, B" the second clause wins while the first has the opposite polarity, so every
contrast sentence holds a pleasant and an unpleasant word. A bag-of-words Naive Bayes scores about
51% on dev from the 400 training labels and 58% from 5000 labels that cover every word, while a
rule that reads the sentence is always right (tests/test_demo_data.py measures both).

Why pre-training helps (the lesson of `make demo`): there are 40 pleasant and 40 unpleasant
adjectives, and the labeled training set is small (400 sentences) and only ever uses half of
them (`labeled_word_fraction`), as a real labeled set cannot cover a real vocabulary; the dev
set uses them all. A model trained from scratch has never seen the other half and guesses. The
corpus uses every adjective, in contexts that give its polarity away: next to another word of
the same polarity ("superb and neat", "an awful mess"), before the character's reaction
("..., so she smiled"), in a story of one mood. Masked language modelling has to learn those
regularities to fill in the blanks, and in doing so puts "exquisite" next to "superb" in its
embedding space. Fine-tuning then only has to map "pleasant region" to 1; the unseen adjectives
are already there. The corpus also says "not" and "but" often enough for the encoder to learn
how they turn a sentence round.

Measured (a check script, not a test): BERT with H=64, L=2, A=2, intermediate 256, no dropout,
pre-trained on 4000 stories (block_size 32, batch 32, AdamW lr 2e-3, 100 warm-up steps then
linear decay, 6000 steps: about 90 s on 2 CPU cores), then fine-tuned on the 400 labels
(10 epochs, batch 16, lr 5e-4): dev accuracy 0.99-1.00 over 4 seeds; the same model fine-tuned
from random weights: 0.60-0.68. The adjectives group by polarity in the embeddings rather
suddenly, after 2000-3000 steps: with half the steps, or with dropout 0.1, the gap was only a
few points.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from common.errors import ConfigError, run_cli

# ---------------------------------------------------------------- vocabulary

FEMALE_NAMES = (
    "Anna", "Maria", "Lucy", "Emma", "Sara", "Nora", "Ella", "Mia", "Rosa", "Lena", "Grace", "Alice",
    "Clara", "Julia", "Olivia", "Hannah", "Ruth", "Greta", "Ida", "Vera", "Zoe", "Iris", "Mona",
    "Tara", "Nina", "Paula", "Helen", "Amy", "Jane", "Kate",
)
MALE_NAMES = (
    "Tom", "Ben", "Max", "Leo", "Sam", "Jack", "Paul", "Peter", "Hugo", "Otto", "Felix", "Oscar",
    "Victor", "Daniel", "Omar", "Ivan", "Carlos", "Luke", "Noah", "Adam", "Eric", "Frank", "George",
    "Henry", "Karl", "Lars", "Mark", "Nick", "Raj", "Tim",
)
JOBS = (
    "baker", "farmer", "fisher", "teacher", "painter", "sailor", "gardener", "miner", "tailor",
    "doctor", "carpenter", "merchant", "hunter", "singer", "knight", "cook", "potter", "builder",
    "shepherd", "blacksmith", "librarian", "clerk", "nurse", "pilot", "student", "musician",
    "writer", "scientist", "driver", "guard",
)


@dataclass(frozen=True)
class Topic:
    """A place, the things found there, and what people do with them (every verb fits every noun)."""
    place: str
    nouns: tuple[str, ...]
    verbs: tuple[tuple[str, str], ...]  # (past tense, infinitive)


def _verbs(*pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(pair.split("/")) for pair in pairs)


TOPICS = (
    Topic("the bakery", ("bread", "cake", "pie", "bun", "tart", "muffin", "pastry", "loaf", "biscuit",
                         "pudding"),
          _verbs("baked/bake", "tasted/taste", "sliced/slice", "wrapped/wrap", "sold/sell", "decorated/decorate")),
    Topic("the harbor", ("boat", "net", "sail", "rope", "anchor", "raft", "canoe", "ship", "buoy", "oar"),
          _verbs("checked/check", "repaired/repair", "painted/paint", "cleaned/clean", "inspected/inspect",
                 "examined/examine")),
    Topic("the forest", ("path", "trail", "stream", "bridge", "cabin", "clearing", "hill", "meadow", "cave",
                         "pond"),
          _verbs("explored/explore", "found/find", "reached/reach", "visited/visit", "mapped/map",
                 "photographed/photograph")),
    Topic("the school", ("book", "lesson", "map", "poem", "essay", "exam", "story", "letter", "puzzle",
                         "report"),
          _verbs("read/read", "studied/study", "copied/copy", "checked/check", "shared/share", "finished/finish")),
    Topic("the farm", ("barn", "field", "fence", "tractor", "orchard", "haystack", "stable", "cart", "well",
                       "shed"),
          _verbs("checked/check", "inspected/inspect", "cleaned/clean", "repaired/repair", "visited/visit",
                 "looked after/look after")),
    Topic("the castle", ("tower", "hall", "gate", "throne", "sword", "shield", "banner", "crown", "armor",
                         "chapel"),
          _verbs("guarded/guard", "polished/polish", "admired/admire", "examined/examine", "cleaned/clean",
                 "showed/show")),
    Topic("the market", ("stall", "basket", "apple", "cheese", "carpet", "lamp", "vase", "scarf", "melon",
                         "jar"),
          _verbs("bought/buy", "sold/sell", "carried/carry", "examined/examine", "admired/admire", "wrapped/wrap")),
    Topic("the garden", ("rose", "tulip", "hedge", "vine", "daisy", "orchid", "shrub", "herb", "fern", "ivy"),
          _verbs("watered/water", "trimmed/trim", "planted/plant", "admired/admire", "tended/tend", "picked/pick")),
    Topic("the mountains", ("peak", "ridge", "slope", "cliff", "glacier", "valley", "summit", "lake",
                            "waterfall", "hut"),
          _verbs("reached/reach", "photographed/photograph", "explored/explore", "admired/admire",
                 "studied/study", "visited/visit")),
    Topic("the kitchen", ("soup", "stew", "salad", "sauce", "pasta", "omelet", "curry", "porridge", "pancake",
                          "sandwich"),
          _verbs("cooked/cook", "tasted/taste", "served/serve", "seasoned/season", "prepared/prepare", "ate/eat")),
    Topic("the workshop", ("chair", "table", "shelf", "clock", "cabinet", "drawer", "stool", "box", "toy",
                           "wagon"),
          _verbs("built/build", "sanded/sand", "painted/paint", "repaired/repair", "polished/polish",
                 "varnished/varnish")),
    Topic("the concert hall", ("song", "concert", "melody", "piano", "violin", "drum", "choir", "tune",
                               "guitar", "flute"),
          _verbs("played/play", "heard/hear", "practiced/practice", "recorded/record", "studied/study",
                 "tuned/tune")),
    Topic("the library", ("novel", "atlas", "journal", "manuscript", "dictionary", "magazine", "diary",
                          "scroll", "catalog", "newspaper"),
          _verbs("read/read", "borrowed/borrow", "studied/study", "returned/return", "sorted/sort",
                 "copied/copy")),
    Topic("the station", ("train", "ticket", "platform", "carriage", "timetable", "engine", "suitcase", "tram",
                          "bus", "bicycle"),
          _verbs("checked/check", "inspected/inspect", "examined/examine", "cleaned/clean", "found/find",
                 "watched/watch")),
)

# Sentiment words: the polarity of an object, and how a person reacts to it.
POSITIVE_WORDS = (
    "wonderful", "lovely", "splendid", "superb", "excellent", "marvelous", "pleasant", "charming",
    "delightful", "brilliant", "glorious", "fantastic", "terrific", "magnificent", "perfect",
    "beautiful", "gorgeous", "elegant", "neat", "tidy", "fresh", "sturdy", "cozy", "sparkling",
    "graceful", "exquisite", "fabulous", "admirable", "impressive", "remarkable", "stunning",
    "handsome", "sublime", "dazzling", "outstanding", "flawless", "pristine", "enchanting",
    "heavenly", "radiant",
)
NEGATIVE_WORDS = (
    "awful", "terrible", "horrible", "dreadful", "nasty", "dreary", "gloomy", "shabby", "ugly",
    "filthy", "rotten", "broken", "flimsy", "dull", "bleak", "grim", "miserable", "wretched",
    "lousy", "poor", "foul", "grimy", "messy", "stale", "sour", "rusty", "dusty", "cracked", "damp",
    "moldy", "smelly", "hideous", "crooked", "clumsy", "greasy", "soggy", "tattered", "worthless",
    "disgusting", "dismal",
)
# Looks only, no judgement: they appear in both labels and in every kind of sentence.
POSITIVE_VERDICTS = ("treat", "success", "delight", "joy", "pleasure", "triumph")
NEGATIVE_VERDICTS = ("mess", "disaster", "failure", "shame", "nuisance", "letdown")
NEUTRAL_ADJECTIVES = (
    "old", "new", "small", "big", "red", "blue", "green", "yellow", "brown", "white", "black",
    "round", "square", "wooden", "heavy", "light", "long", "short", "tall", "wide",
)
POSITIVE_REACTIONS = ("smiled", "laughed", "cheered", "grinned", "clapped", "beamed", "danced",
                      "rejoiced", "giggled", "sang")
NEGATIVE_REACTIONS = ("frowned", "sighed", "groaned", "wept", "grumbled", "scowled", "cried",
                      "sulked", "winced", "moaned")
POSITIVE_FEELINGS = ("happy", "glad", "proud", "delighted", "thrilled", "pleased", "joyful", "content")
NEGATIVE_FEELINGS = ("sad", "upset", "angry", "annoyed", "disappointed", "grumpy", "unhappy", "cross")

TIMES = ("morning", "afternoon", "evening", "day", "night")
MIDDLE_CONNECTIVES = ("Then", "After that,", "Later,", "Next,", "Soon", "A little later,")


@dataclass(frozen=True)
class Character:
    name: str
    job: str
    he: str  # the pronoun that refers to them


def _character(rng: random.Random, avoid: Sequence[str] = ()) -> Character:
    female = rng.random() < 0.5
    names = [n for n in (FEMALE_NAMES if female else MALE_NAMES) if n not in avoid]
    return Character(rng.choice(names), rng.choice(JOBS), "she" if female else "he")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _capitalize(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


# ---------------------------------------------------------------- judgements (shared by corpus and task)


def _polar_word(rng: random.Random, positive: bool, words: Optional[Sequence[Sequence[str]]] = None) -> str:
    pools = words or (NEGATIVE_WORDS, POSITIVE_WORDS)
    return rng.choice(pools[int(positive)])


@dataclass(frozen=True)
class Style:
    """How judgements are phrased. forms: weights of (plain, negated, contrast, concessive);
    pairs: probability of two adjectives of one polarity ("superb and neat");
    verdicts: probability of an adjective with a noun of its polarity ("a superb treat")."""
    forms: tuple[float, float, float, float]
    pairs: float
    verdicts: float


def _description(rng: random.Random, positive: bool, style: Style, words) -> str:
    """Something of one polarity to say about a thing: "superb", "superb and neat", "a superb treat"."""
    adjective = _polar_word(rng, positive, words)
    roll = rng.random()
    if roll < style.verdicts:
        noun = rng.choice(POSITIVE_VERDICTS if positive else NEGATIVE_VERDICTS)
        return f"{_article(adjective)} {adjective} {noun}"
    if roll < style.verdicts + style.pairs:
        return f"{adjective} and {_polar_word(rng, positive, words)}"
    return adjective


def _judgement(rng: random.Random, outcome: bool, nouns: Sequence[str], focus: str, who: str,
               style: Style, words=None) -> str:
    """A clause saying how a thing was, whose overall polarity is `outcome` (True = pleasant).

    In the negated form the description has the opposite polarity; in both contrast forms the
    first clause is opposite and the second wins.
    """
    form = rng.choices(("plain", "negated", "contrast", "concessive"), weights=style.forms)[0]
    if form == "plain":
        said = _description(rng, outcome, style, words)
        return rng.choice((f"{who} thought the {focus} was {said}",
                           f"the {focus} was {said}",
                           f"{who} said that the {focus} was {said}"))
    if form == "negated":
        said = _description(rng, not outcome, style, words)
        return rng.choice((f"{who} thought the {focus} was not {said}",
                           f"the {focus} was not {said}",
                           f"{who} said that the {focus} was not {said}"))
    other = rng.choice([n for n in nouns if n != focus])
    first, second = _description(rng, not outcome, style, words), _description(rng, outcome, style, words)
    if form == "contrast":
        return f"the {other} was {first}, but the {focus} was {second}"
    return f"although the {other} was {first}, the {focus} was {second}"


def _reaction(rng: random.Random, outcome: bool) -> str:
    return rng.choice(POSITIVE_REACTIONS if outcome else NEGATIVE_REACTIONS)


def _feeling(rng: random.Random, outcome: bool) -> str:
    return rng.choice(POSITIVE_FEELINGS if outcome else NEGATIVE_FEELINGS)


# ---------------------------------------------------------------- corpus

STORY_LEAN = 0.3
CORPUS_STYLE = Style(forms=(0.7, 0.1, 0.1, 0.1), pairs=0.3, verdicts=0.4)


class _Story:
    """State of one story: who is on stage, the place, the thing last talked about, the mood."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.hero = _character(rng)
        self.friend: Optional[Character] = None
        self.topic = rng.choice(TOPICS)
        self.focus = rng.choice(self.topic.nouns)
        # A story leans one way (P(pleasant) = 0.5 +- STORY_LEAN), so neighbouring sentences share
        # a mood; each judgement still decides its own reaction.
        self.mood = 0.5 + rng.choice((STORY_LEAN, -STORY_LEAN))
        self.last_outcome = rng.random() < self.mood
        self.named_last = True

    def subject(self, who: Optional[Character] = None) -> str:
        """The hero's name or pronoun; a friend of the same gender is always named (no ambiguity)."""
        who = who or self.hero
        if who is self.friend or (self.friend and self.friend.he == self.hero.he):
            return who.name
        use_name = not self.named_last and self.rng.random() < 0.4
        self.named_last = use_name
        return who.name if use_name else who.he

    def new_focus(self) -> str:
        self.focus = self.rng.choice([n for n in self.topic.nouns if n != self.focus])
        return self.focus

    def outcome(self) -> bool:
        self.last_outcome = self.rng.random() < self.mood
        return self.last_outcome

    def opening(self) -> list[str]:
        r, h, t = self.rng, self.hero, self.topic
        first = r.choice((f"Once there was {_article(h.job)} {h.job} named {h.name}.",
                          f"{h.name} was {_article(h.job)} {h.job} who lived near {t.place}.",
                          f"{h.name} the {h.job} woke up early one {r.choice(TIMES)}."))
        past, infinitive = r.choice(t.verbs)
        second = r.choice((f"One {r.choice(TIMES)}, {h.he} went to {t.place} to {infinitive} the {self.focus}.",
                           f"That day, {h.he} walked to {t.place} and {past} the {self.focus}."))
        return [first, second]

    def event(self, connective: str) -> list[str]:
        r, t = self.rng, self.topic
        kind = r.choices(("action", "judgement", "said", "meet", "friend"), weights=(3, 4, 2, 1, 2))[0]
        if kind == "meet" and self.friend is None:
            self.friend = _character(r, avoid=(self.hero.name,))
            f = self.friend
            return [_capitalize(f"{connective}{self.subject()} met {f.name}, {_article(f.job)} {f.job}, "
                                f"near the {self.focus}.")]
        if kind == "friend" and self.friend is not None:
            outcome = self.outcome()
            clause = _judgement(r, outcome, t.nouns, self.new_focus(), self.friend.name, CORPUS_STYLE)
            return [_capitalize(f"{connective}{clause}, so {self.friend.name} {_reaction(r, outcome)}.")]
        if kind in ("judgement", "friend"):  # also "friend" before anyone was met
            outcome = self.outcome()
            clause = _judgement(r, outcome, t.nouns, self.focus, self.subject(), CORPUS_STYLE)
            return [_capitalize(f"{connective}{clause}, so {self.hero.he} {_reaction(r, outcome)}.")]
        if kind == "said":  # the judgement and the reaction in two sentences (linked for NSP)
            outcome = self.outcome()
            clause = _judgement(r, outcome, t.nouns, self.focus, self.subject(), CORPUS_STYLE)
            after = r.choice((f"{self.hero.he} {_reaction(r, outcome)}.",
                              f"{self.hero.he} felt {_feeling(r, outcome)} about the {self.focus}."))
            return [_capitalize(f"{connective}{clause}."), _capitalize(after)]
        past, _ = r.choice(t.verbs)
        look = r.choice(NEUTRAL_ADJECTIVES)
        return [_capitalize(f"{connective}{self.subject()} {past} the {look} {self.new_focus()}.")]

    def ending(self) -> str:
        r, h = self.rng, self.hero
        outcome = self.last_outcome  # the story ends in the mood of its last judgement
        return r.choice((f"Finally, {h.name} went home and felt {_feeling(r, outcome)}.",
                         f"Finally, {h.he} left {self.topic.place} and {_reaction(r, outcome)}.",
                         f"In the end, {h.name} {_reaction(r, outcome)} and went to bed."))

    def tell(self) -> list[str]:
        sentences = self.opening()
        num_events = self.rng.randint(4, 9)
        for i in range(num_events):
            if i == 0:
                connective = "First, "
            elif self.rng.random() < 0.5:
                connective = self.rng.choice(MIDDLE_CONNECTIVES) + " "
            else:
                connective = ""
            sentences.extend(self.event(connective))
        sentences.append(self.ending())
        return sentences


def _check_count(value, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def generate_corpus(num_documents: int = 4000, seed: int = 0) -> list[list[str]]:
    """`num_documents` stories, each a list of 7 to 21 sentences; the same seed gives the same corpus."""
    _check_count(num_documents, "num_documents")
    rng = random.Random(seed)
    return [_Story(rng).tell() for _ in range(num_documents)]


def write_corpus(path, num_documents: int = 4000, seed: int = 0) -> Path:
    """Write generate_corpus(num_documents, seed) as one sentence per line, a blank line between
    documents (the input format of TextDatasetForNextSentencePrediction). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    documents = generate_corpus(num_documents, seed)
    path.write_text("\n\n".join("\n".join(doc) for doc in documents) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- labeled task

TASK_STYLE = Style(forms=(0.5, 0.25, 0.125, 0.125), pairs=0.2, verdicts=0.0)


def labeled_words(fraction: float = 0.5) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (unpleasant, pleasant) adjectives the labeled training set may use: the first `fraction`
    of each list. Dev uses them all."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"labeled_word_fraction must be in (0, 1], got {fraction!r}")
    n = max(1, round(len(POSITIVE_WORDS) * fraction))
    return NEGATIVE_WORDS[:n], POSITIVE_WORDS[:n]


def _labeled_sentence(rng: random.Random, words) -> tuple[str, int]:
    label = rng.random() < 0.5
    topic = rng.choice(TOPICS)
    who = rng.choice(FEMALE_NAMES + MALE_NAMES)
    clause = _judgement(rng, label, topic.nouns, rng.choice(topic.nouns), who, TASK_STYLE, words)
    return _capitalize(clause) + ".", int(label)


def generate_labeled_task(n_train: int = 400, n_dev: int = 1000, seed: int = 0,
                          labeled_word_fraction: float = 0.5) -> dict[str, list[tuple[str, int]]]:
    """{"train": [(sentence, label)] * n_train, "dev": [...] * n_dev}; label 1 = pleased.

    Train sentences use only `labeled_words(labeled_word_fraction)`; dev sentences use every
    adjective and never repeat a train sentence. Forms (TASK_STYLE): 50% plain, 25% negated,
    25% contrast ("but" or "although").
    """
    _check_count(n_train, "n_train")
    _check_count(n_dev, "n_dev")
    rng = random.Random(seed)
    train_words = labeled_words(labeled_word_fraction)
    train = [_labeled_sentence(rng, train_words) for _ in range(n_train)]
    seen = {sentence for sentence, _ in train}
    dev: list[tuple[str, int]] = []
    while len(dev) < n_dev:
        sentence, label = _labeled_sentence(rng, None)
        if sentence not in seen:
            seen.add(sentence)
            dev.append((sentence, label))
    return {"train": train, "dev": dev}


def write_labeled_task(folder, n_train: int = 400, n_dev: int = 1000, seed: int = 0,
                       labeled_word_fraction: float = 0.5) -> dict[str, Path]:
    """Write folder/train.tsv and folder/dev.tsv, header `sentence<TAB>label`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_labeled_task(n_train, n_dev, seed, labeled_word_fraction).items():
        paths[split] = folder / f"{split}.tsv"
        lines = ["sentence\tlabel"] + [f"{sentence}\t{label}" for sentence, label in rows]
        paths[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def word_list() -> list[str]:
    """Every word and punctuation mark the generators can write, lower-cased and sorted: a complete
    word-level vocabulary (e.g. for a vocab.txt), so no demo token is ever [UNK]."""
    words = {".", ",", "an", "a"}
    templates = (
        "once there was named was who lived near woke up early one went to the walked to and that day "
        "first then after that later next soon little met near thought said that not but although "
        "so felt about finally home left in end went bed he she"
    )
    words.update(templates.split())
    for group in (FEMALE_NAMES, MALE_NAMES, JOBS, TIMES, NEUTRAL_ADJECTIVES, POSITIVE_WORDS, NEGATIVE_WORDS,
                  POSITIVE_VERDICTS, NEGATIVE_VERDICTS, POSITIVE_REACTIONS, NEGATIVE_REACTIONS,
                  POSITIVE_FEELINGS, NEGATIVE_FEELINGS):
        words.update(w.lower() for w in group)
    for topic in TOPICS:
        words.update(topic.place.split())
        words.update(topic.nouns)
        for past, infinitive in topic.verbs:
            words.update(past.split() + infinitive.split())
    return sorted(words)


# ---------------------------------------------------------------- command line


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Write the demo corpus and labeled task to a folder.")
    parser.add_argument("--out", default="data/demo", help="folder for corpus.txt, train.tsv, dev.tsv")
    parser.add_argument("--num_documents", type=int, default=4000)
    parser.add_argument("--n_train", type=int, default=400)
    parser.add_argument("--n_dev", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = write_corpus(Path(args.out) / "corpus.txt", args.num_documents, args.seed)
    paths = write_labeled_task(args.out, args.n_train, args.n_dev, args.seed)
    print(f"wrote {corpus}, {paths['train']}, {paths['dev']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
