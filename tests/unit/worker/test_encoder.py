import numpy as np

from worker.learning.encoder import SemanticCache, TextEncoder


def test_tiny_encoder_gives_unit_vectors_in_batches(tiny_bert_dir):
    enc = TextEncoder(tiny_bert_dir, batch_size=2)
    out = enc.encode(["red shoes", "blue jacket", "a much longer description of a lamp"])
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(enc.encode(["blue jacket"])[0], out[1], rtol=1e-4, atol=1e-5)


def test_cache_encodes_only_new_texts_and_survives_restart(tiny_bert_dir, tmp_path):
    enc = TextEncoder(tiny_bert_dir)
    cache = SemanticCache(enc, tmp_path)
    first = cache.get(["a", "b", "a"])
    assert cache.misses == 2 and np.array_equal(first[0], first[2])
    cache.get(["b", "c"])
    assert cache.misses == 3
    again = SemanticCache(enc, tmp_path)
    assert len(again) == 3
    np.testing.assert_array_equal(again.get(["a"])[0], first[0])
    assert again.misses == 0


def test_real_minilm_places_similar_texts_closer(real_encoder):
    v = real_encoder.encode(["trail running shoes", "lightweight running sneakers",
                             "stainless steel cookware set"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
