"""Curating structured chain-of-thought (CoT) rationales with an OpenAI-compatible model.

A strong audio-language model (GPT-4o-class, through the official ``openai`` client) sees a
training clip's audio, transcript and human vote distribution and writes the four-part
reasoning of ``ambemo.model.prompts``; a second call reads only that rationale and predicts a
distribution, and the rationale is kept only if that prediction is close to the votes (JS in
bits under a threshold). Results go to an append-only JSONL store that training reads with
``data.cot_store=<store>``.

Modules: ``config`` (CurateConfig, prices), ``protocol`` (prompts, JSON schemas, local
validation), ``acoustics`` (descriptors for text-only endpoints), ``budget`` (usage, cost, the
spending ceiling), ``client`` (the two API calls, error reasons, redaction), ``store`` (the
JSONL store, resume keys, ``load_accepted``), ``curate`` (the run loop, report, and the
``ambemo curate`` command).
"""
