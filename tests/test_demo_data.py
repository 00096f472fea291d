"""The demo's built-in data (demo/corpus.py): reproducible, in the right formats, and shaped
so that the demo's lesson holds: NSP has something to detect, single words cannot solve the
labeled task, and the corpus gives every adjective's polarity away through its contexts."""
import collections
import math
import random
import re

import numpy as np
import pytest

from demo import corpus as demo_data
from common.errors import ConfigError

WORD = re.compile(r"\w+|[^\w\s]")
SENTIMENT_WORDS = demo_data.POSITIVE_WORDS + demo_data.NEGATIVE_WORDS
POLARITY = {**{w: 1 for w in demo_data.POSITIVE_WORDS}, **{w: 0 for w in demo_data.NEGATIVE_WORDS}}


def words(sentence: str) -> list[str]:
    return WORD.findall(sentence.lower())


@pytest.fixture(scope="module")
def corpus():
    return demo_data.generate_corpus(num_documents=2000, seed=0)


@pytest.fixture(scope="module")
def task():
    return demo_data.generate_labeled_task(n_train=400, n_dev=1000, seed=0)


# ---------------------------------------------------------------- reproducibility and format


def test_same_seed_gives_the_same_data_and_another_seed_does_not():
    assert demo_data.generate_corpus(50, seed=3) == demo_data.generate_corpus(50, seed=3)
    assert demo_data.generate_corpus(50, seed=3) != demo_data.generate_corpus(50, seed=4)
    assert demo_data.generate_labeled_task(40, 40, seed=3) == demo_data.generate_labeled_task(40, 40, seed=3)
    assert demo_data.generate_labeled_task(40, 40, seed=3) != demo_data.generate_labeled_task(40, 40, seed=4)


def test_every_document_is_a_story_of_single_line_sentences(corpus):
    lengths = [len(doc) for doc in corpus]
    assert len(corpus) == 2000
    assert min(lengths) >= 7 and max(lengths) <= 21, f"sentences per document from {min(lengths)} to {max(lengths)}"
    bad = [s for doc in corpus for s in doc if not s.strip() or "\n" in s or "\t" in s or not s.endswith(".")]
    assert not bad, f"{len(bad)} malformed sentences, e.g. {bad[:3]}"


def test_written_corpus_has_one_sentence_per_line_and_a_blank_line_between_documents(tmp_path):
    path = demo_data.write_corpus(tmp_path / "sub" / "corpus.txt", num_documents=30, seed=1)
    blocks = path.read_text(encoding="utf-8").rstrip("\n").split("\n\n")
    assert [block.split("\n") for block in blocks] == demo_data.generate_corpus(30, seed=1)
    assert all(line.strip() for block in blocks for line in block.split("\n")), "an empty line inside a document"


def test_default_corpus_is_a_few_megabytes(tmp_path):
    path = demo_data.write_corpus(tmp_path / "corpus.txt")
    size_mb = path.stat().st_size / 1e6
    num_sentences = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line)
    assert 0.5 <= size_mb <= 4, f"default corpus is {size_mb:.2f} MB"
    assert 30_000 <= num_sentences <= 60_000, f"default corpus has {num_sentences} sentences"


def test_labeled_task_files_have_a_header_and_balanced_binary_labels(tmp_path):
    paths = demo_data.write_labeled_task(tmp_path, n_train=300, n_dev=200, seed=2)
    for split, n in (("train", 300), ("dev", 200)):
        lines = paths[split].read_text(encoding="utf-8").splitlines()
        assert lines[0] == "sentence\tlabel", f"{split}.tsv header is {lines[0]!r}"
        rows = [line.split("\t") for line in lines[1:]]
        assert len(rows) == n and all(len(row) == 2 for row in rows), f"{split}.tsv: {len(rows)} rows"
        labels = [row[1] for row in rows]
        assert set(labels) == {"0", "1"}, f"{split}.tsv labels {set(labels)}"
        share = labels.count("1") / n
        assert 0.4 <= share <= 0.6, f"{split}.tsv has {share:.0%} label 1"


def test_every_word_written_is_in_word_list(corpus, task):
    known = set(demo_data.word_list())
    used = {w for doc in corpus for s in doc for w in words(s)}
    used |= {w for rows in task.values() for s, _ in rows for w in words(s)}
    assert used <= known, f"missing from word_list(): {sorted(used - known)}"
    assert len(known) < 2000, f"vocabulary of {len(known)} words"


def test_bad_sizes_raise_config_error_naming_the_argument():
    with pytest.raises(ConfigError, match="num_documents"):
        demo_data.generate_corpus(0)
    with pytest.raises(ConfigError, match="n_dev"):
        demo_data.generate_labeled_task(10, -1)
    with pytest.raises(ConfigError, match="labeled_word_fraction"):
        demo_data.generate_labeled_task(10, 10, labeled_word_fraction=0)


def test_command_line_writes_corpus_and_task(tmp_path):
    assert demo_data.main(["--out", str(tmp_path), "--num_documents", "5", "--n_train", "4", "--n_dev", "3"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "dev.tsv", "train.tsv"]


# ---------------------------------------------------------------- NSP has something to detect


def test_consecutive_sentences_share_a_story_word_far_more_often_than_random_pairs(corpus):
    story_words = {n.lower() for n in demo_data.FEMALE_NAMES + demo_data.MALE_NAMES}
    story_words |= {noun for topic in demo_data.TOPICS for noun in topic.nouns}
    story_words |= {topic.place.split()[-1] for topic in demo_data.TOPICS}

    def share(a: str, b: str) -> bool:
        return bool(set(words(a)) & set(words(b)) & story_words)

    consecutive = [share(doc[i], doc[i + 1]) for doc in corpus for i in range(len(doc) - 1)]
    rng = random.Random(0)
    random_pairs = []
    while len(random_pairs) < len(consecutive):
        i, j = rng.randrange(len(corpus)), rng.randrange(len(corpus))
        if i != j:
            random_pairs.append(share(rng.choice(corpus[i]), rng.choice(corpus[j])))
    p_next, p_random = np.mean(consecutive), np.mean(random_pairs)
    assert p_next >= 0.4 and p_next >= 10 * p_random, (
        f"consecutive sentences share a name/place/thing {p_next:.1%} of the time, random pairs "
        f"{p_random:.1%}: NSP needs a clear difference (>= 40% and >= 10x)")


# ---------------------------------------------------------------- the label needs context


def rule(sentence: str) -> int:
    """Read the sentence: the clause after "but" (or after the comma of "although") decides; "not"
    flips it; the polarity of that clause's sentiment words gives the answer."""
    ws = words(sentence)
    if "but" in ws:
        ws = ws[ws.index("but") + 1:]
    elif "although" in ws:
        ws = ws[ws.index(",") + 1:]
    polarities = {POLARITY[w] for w in ws if w in POLARITY}
    assert len(polarities) == 1, f"no single polarity in the deciding clause of {sentence!r}"
    polarity = polarities.pop()
    return 1 - polarity if "not" in ws else polarity


def naive_bayes_accuracy(train, test) -> float:
    """Multinomial Naive Bayes on word counts, add-one smoothing: the classic bag-of-words baseline."""
    counts = {0: collections.Counter(), 1: collections.Counter()}
    priors = collections.Counter(label for _, label in train)
    for sentence, label in train:
        counts[label].update(words(sentence))
    vocab = set(counts[0]) | set(counts[1])
    totals = {c: sum(counts[c].values()) + len(vocab) for c in (0, 1)}

    def predict(sentence):
        score = {c: math.log(priors[c]) + sum(math.log((counts[c][w] + 1) / totals[c])
                                              for w in words(sentence) if w in vocab) for c in (0, 1)}
        return int(score[1] > score[0])

    return float(np.mean([predict(s) == label for s, label in test]))


def test_a_rule_that_reads_the_sentence_gets_every_label_right(task):
    for split, rows in task.items():
        wrong = [(s, label) for s, label in rows if rule(s) != label]
        assert not wrong, f"{len(wrong)} {split} labels disagree with the rule, e.g. {wrong[:2]}"


def test_bag_of_words_stays_far_below_the_rule_even_with_many_labels(task):
    few = naive_bayes_accuracy(task["train"], task["dev"])
    many = demo_data.generate_labeled_task(n_train=5000, n_dev=1000, seed=1, labeled_word_fraction=1.0)
    plenty = naive_bayes_accuracy(many["train"], many["dev"])
    assert few <= 0.7 and plenty <= 0.75, (
        f"bag-of-words Naive Bayes: dev accuracy {few:.3f} from 400 labels, {plenty:.3f} from 5000 "
        "labels covering every word; the rule gets 1.000. It should stay far below (<= 0.70 / 0.75)")


def test_every_contrast_sentence_holds_both_polarities_so_its_words_cancel(task):
    contrast = [s for s, _ in task["train"] if {"but", "although"} & set(words(s))]
    mixed = [s for s in contrast if {POLARITY[w] for w in words(s) if w in POLARITY} == {0, 1}]
    assert len(contrast) >= 50 and len(mixed) == len(contrast), (
        f"{len(mixed)} of {len(contrast)} contrast sentences hold a pleasant and an unpleasant word")


def test_training_labels_cover_half_the_adjectives_and_dev_needs_the_rest(task):
    negative, positive = demo_data.labeled_words(0.5)
    in_train = {w for s, _ in task["train"] for w in words(s) if w in POLARITY}
    assert in_train <= set(negative + positive), f"train uses unlabeled words {in_train - set(negative + positive)}"
    unseen = [s for s, _ in task["dev"] if any(w in POLARITY and w not in in_train for w in words(s))]
    share = len(unseen) / len(task["dev"])
    assert 0.4 <= share <= 0.9, f"{share:.0%} of dev sentences hold an adjective the labels never show"
    overlap = {s for s, _ in task["train"]} & {s for s, _ in task["dev"]}
    assert not overlap, f"{len(overlap)} dev sentences repeat train sentences"


# ---------------------------------------------------------------- the corpus teaches the words


def test_every_pleasant_adjective_meets_more_pleased_reactions_than_any_unpleasant_one(corpus):
    positive, negative = set(demo_data.POSITIVE_REACTIONS), set(demo_data.NEGATIVE_REACTIONS)
    pleased = collections.Counter()
    total = collections.Counter()
    for doc in corpus:
        for sentence in doc:
            ws = set(words(sentence))
            n_pos, n_neg = len(ws & positive), len(ws & negative)
            for adjective in ws & set(SENTIMENT_WORDS):
                pleased[adjective] += n_pos
                total[adjective] += n_pos + n_neg
    rate = {a: pleased[a] / total[a] for a in SENTIMENT_WORDS}
    worst_pos = min(demo_data.POSITIVE_WORDS, key=rate.get)
    worst_neg = max(demo_data.NEGATIVE_WORDS, key=rate.get)
    assert min(total.values()) >= 50, f"an adjective met only {min(total.values())} reactions"
    assert rate[worst_pos] >= 0.6 and rate[worst_neg] <= 0.4, (
        f"share of pleased reactions: lowest pleasant word {worst_pos!r} {rate[worst_pos]:.2f}, "
        f"highest unpleasant word {worst_neg!r} {rate[worst_neg]:.2f}")


def test_synonyms_share_contexts_so_each_adjectives_nearest_neighbour_has_its_polarity(corpus):
    """Distributional check: describe each adjective by the words within 3 positions of it
    (positive pointwise mutual information), then ask whether its nearest neighbour (cosine) has
    the same polarity. This is what masked language modelling can pick up from the corpus."""
    window = 3
    vocab = {w: i for i, w in enumerate(demo_data.word_list())}
    index = {a: k for k, a in enumerate(SENTIMENT_WORDS)}
    counts = np.zeros((len(SENTIMENT_WORDS), len(vocab)))
    for doc in corpus:
        for sentence in doc:
            ws = words(sentence)
            for i, adjective in enumerate(ws):
                if adjective in index:
                    for w in ws[max(0, i - window):i] + ws[i + 1:i + 1 + window]:
                        counts[index[adjective], vocab[w]] += 1
    joint = counts / counts.sum()
    expected = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ppmi = np.where(joint > 0, np.maximum(np.log(joint / expected), 0), 0)
    unit = ppmi / np.linalg.norm(ppmi, axis=1, keepdims=True)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, -np.inf)
    polarity = np.array([POLARITY[a] for a in SENTIMENT_WORDS])
    agree = float(np.mean(polarity[cosine.argmax(1)] == polarity))
    same = polarity[:, None] == polarity[None, :]
    off_diagonal = ~np.eye(len(polarity), dtype=bool)
    mean_same, mean_other = cosine[same & off_diagonal].mean(), cosine[~same].mean()
    assert agree >= 0.9 and mean_same > mean_other, (
        f"nearest neighbour has the same polarity for {agree:.0%} of adjectives (want >= 90%); "
        f"mean cosine same polarity {mean_same:.3f}, other polarity {mean_other:.3f}")
