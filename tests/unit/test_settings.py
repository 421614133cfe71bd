import threading
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.settings import Settings


def test_defaults_use_an_embedded_sqlite_file_under_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"DEEPSCAN_HOME": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'deepscan.db'}"
    assert settings.embedded
    assert settings.device == "auto"
    assert settings.checkpoint is None


def test_xdg_data_home_is_honoured_without_deepscan_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})
    assert settings.home == tmp_path / "deepscan"


def test_environment_overrides_every_default(tmp_path: Path) -> None:
    env = {
        "DEEPSCAN_DATABASE_URL": "postgresql+psycopg://db/deepscan",
        "DEEPSCAN_BROKER_URL": "redis://127.0.0.1:6379/0",
        "DEEPSCAN_CHECKPOINT": str(tmp_path / "m.safetensors"),
        "DEEPSCAN_DEVICE": "cuda:1",
        "DEEPSCAN_BATCH_SIZE": "128",
    }
    settings = Settings.from_env(env)
    assert settings.database_url == "postgresql+psycopg://db/deepscan"
    assert not settings.embedded
    assert settings.checkpoint == tmp_path / "m.safetensors"
    assert settings.device == "cuda:1"
    assert settings.batch_size == 128


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:0", ""])
def test_bad_device_is_refused_with_the_accepted_forms(device: str) -> None:
    if device == "":
        assert Settings.from_env({"DEEPSCAN_DEVICE": device}).device == "auto"
        return
    with pytest.raises(ConfigError, match="use auto, cpu, cuda or cuda:N"):
        Settings.from_env({"DEEPSCAN_DEVICE": device})


def test_non_numeric_batch_size_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="DEEPSCAN_BATCH_SIZE"):
        Settings.from_env({"DEEPSCAN_BATCH_SIZE": "many"})


def test_worker_data_path_settings_default_to_the_deployed_worker_and_read_their_variables() -> None:
    defaults = Settings.from_env({})
    assert (defaults.worker_concurrency, defaults.gpu_decode, defaults.compile_model) == (2, True, False)
    assert defaults.batch_wait_ms == 10.0
    env = {
        "DEEPSCAN_WORKER_CONCURRENCY": "1",
        "DEEPSCAN_GPU_DECODE": "off",
        "DEEPSCAN_COMPILE": "1",
        "DEEPSCAN_BATCH_WAIT_MS": "0",
    }
    settings = Settings.from_env(env)
    assert (settings.worker_concurrency, settings.gpu_decode, settings.compile_model) == (1, False, True)
    assert settings.batch_wait_ms == 0.0
    assert defaults.decode_budget_mpix == 128.0
    assert Settings.from_env({"DEEPSCAN_DECODE_BUDGET_MPIX": "32.5"}).decode_budget_mpix == 32.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEEPSCAN_WORKER_CONCURRENCY", "0"), ("DEEPSCAN_BATCH_WAIT_MS", "-5"), ("DEEPSCAN_DECODE_BUDGET_MPIX", "0")],
)
def test_worker_data_path_settings_refuse_impossible_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_a_chunk_of_local_files_decodes_on_no_more_threads_than_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import pipeline, runtime

    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    settings = Settings.from_env({"DEEPSCAN_FETCH_THREADS": "16"})
    local = [(1, "file:///data/a.jpg"), (2, "file:///data/b.mp4")]
    assert pipeline.fetch_threads_for(local, settings) == 4
    # Anything that waits on the network keeps every fetch thread, so downloads overlap.
    assert pipeline.fetch_threads_for([*local, (3, "https://example.com/c.jpg")], settings) == 16
    assert pipeline.fetch_threads_for([(3, "s3://bucket/c.jpg")], settings) == 16
    # Fewer threads asked for than cores: the setting wins; one core still gets two threads.
    assert pipeline.fetch_threads_for(local, Settings.from_env({"DEEPSCAN_FETCH_THREADS": "1"})) == 1
    monkeypatch.setattr(runtime, "usable_cores", lambda: 1)
    assert pipeline.fetch_threads_for(local, settings) == 2


def test_chunks_of_local_files_take_turns_at_decoding_as_the_cores_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import pipeline, runtime

    eight = Settings.from_env({"DEEPSCAN_FETCH_THREADS": "8"})
    for cores, count in ((1, 1), (2, 1), (4, 1), (16, 2), (64, 8)):
        monkeypatch.setattr(runtime, "usable_cores", lambda cores=cores: cores)
        assert runtime.local_decode_turns(eight) == count, cores

    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    turns = threading.BoundedSemaphore(runtime.local_decode_turns(eight))
    entered = threading.Event()

    def second_local_chunk() -> None:
        with pipeline.DecodeTurn(turns):
            entered.set()

    with pipeline.DecodeTurn(turns) as first:
        other = threading.Thread(target=second_local_chunk)
        other.start()
        assert not entered.wait(0.3), "a second chunk of local files decoded while the first held the turn"
        with pipeline.DecodeTurn(None):  # a remote chunk waits on the network: it never waits its turn
            pass
        # Once its last item is taken up, the first chunk lets the next one start, while that item
        # (a long video, say) is still being decoded.
        first.give_back()
        assert entered.wait(10), "the waiting chunk never got its turn"
        first.give_back()  # again, or leaving the block: nothing more is released
    other.join()
    assert turns.acquire(blocking=False), "the turn was not given back"
