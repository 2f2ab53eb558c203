"""What only the offline ``smoke`` profile and the benchmark need, kept apart from the study's plumbing.

- :mod:`helpers.smoke.synthetic`: a small synthetic StoryReasoning (the Hub's schema and text
  format, coloured shapes drawn in their true boxes), the data of ``profiles/smoke.yaml`` and
  of the ``*-bench`` profiles;
- :mod:`helpers.smoke.bench_inputs`: the benchmark's frames, sentences and pairs, built from it.

Nothing here is part of the method: the real profiles (``quick``, ``full``) never import it.
"""
