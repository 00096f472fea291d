"""demo/story_qa.py: the questions of the pretraining-buys-tuning experiment are answerable from the prompt."""
from demo.story_qa import story_questions
from demo.corpus import generate_corpus


def test_every_answer_is_written_in_its_prompt_and_most_stories_give_questions():
    stories = generate_corpus(200, seed=5)
    records = [r for s in stories for r in story_questions(s)]
    assert len(records) >= 200, f"only {len(records)} questions from 200 stories"
    for r in records:
        context = r["instruction"].rsplit("\n", 1)[0]
        assert r["output"] and f" {r['output']}" in f" {context}", r


def test_a_known_opening_gives_the_job_and_the_place():
    story = ["Amy was a musician who lived near the library.", "One day, she went to the library to copy the atlas."]
    answers = {r["instruction"].rsplit("\n", 1)[1]: r["output"] for r in story_questions(story)}
    assert answers == {"the job of Amy": "musician", "where Amy went": "the library"}, answers
