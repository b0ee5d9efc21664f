"""What can be proved here about running the pipeline beyond one machine.

Dataflow and Flink clusters cannot run on these machines. These tests prove the parts they rely on:
the pipeline runs on ``PortableRunner`` with an EXTERNAL worker pool in a separate process (the
worker model Flink uses with Beam's SDK container in ``--worker_pool`` mode); ``DataflowRunner
--dry_run`` builds the whole job with GPU workers and the custom image; and the pipeline proto
round-trips through the Runner API while every DoFn pickles.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from core.media import make_video
from index import read_current
from model_runner.tiny import build_tiny_plm
from pipeline.build import run_build
from pipeline.graph import pipeline
from pipeline.options import beam_options
from schemas.config import BuildConfig, ClipSpec, ModelConfig
from schemas.records import VideoInput
from schemas.rows import RunContext
from schemas.tables import RUN_SPECIFIC_COLUMNS

IMAGE = "us-central1-docker.pkg.dev/plm-test-project/plm/plm-video-index-worker:2.77.0-cu124"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
POOL_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random PLM saved like a real checkpoint."""
    return build_tiny_plm(str(tmp_path_factory.mktemp("models") / "tiny-plm"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real video and one broken file: segments and an error row."""
    folder = tmp_path_factory.mktemp("videos")
    make_video(str(folder / "a.mp4"), "testsrc=size=320x240:rate=25", 6)
    (folder / "broken.mp4").write_bytes(os.urandom(2048))
    return folder


def make_config(source: str, output: str, model: str) -> BuildConfig:
    return BuildConfig(input=source, output=output, clips=ClipSpec.parse("fixed:4"),
                       model=ModelConfig(model=model, max_new_tokens=6, batch_size=2, torch_threads=2))


def comparable(output: str, table: str) -> list[dict]:
    rows = read_current(output, table).drop_columns(list(RUN_SPECIFIC_COLUMNS)).to_pylist()
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def worker_pool(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """Beam's ``worker_pool_main`` in its own process (and process group) on a free port.

    The pool starts each SDK worker as ``python -c ...SdkHarness(...)``, resolving ``python`` on
    PATH, so the venv's bin folder goes first: workers import the project (installed editable),
    whose packages import the torchvision shim first.
    """
    port = _free_port()
    log_file = tmp_path / "worker_pool.log"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + POOL_START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"worker pool exited with {process.returncode}:\n{log_file.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"worker pool did not listen on {port}:\n{log_file.read_text()}")
                time.sleep(0.2)
        yield port, log_file
    finally:
        # The pool and the SDK workers it started share the process group made for it.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_portable_runner_with_external_worker_pool(tmp_path: Path, videos: Path, tiny_model: str,
                                                   worker_pool: tuple[int, Path]) -> None:
    port, pool_log = worker_pool
    reference = str(tmp_path / "fnapi")
    run_build(make_config(str(videos), reference, tiny_model), beam_options([]))
    external = str(tmp_path / "external")
    options = beam_options(["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL",
                            f"--environment_config=localhost:{port}"])
    summary = run_build(make_config(str(videos), external, tiny_model), options)
    # The work really ran in a worker the pool started, not in this process.
    assert "Starting worker with command" in pool_log.read_text(), pool_log.read_text()
    assert (summary.indexed, summary.failed) == (1, 1)
    segments = comparable(external, "segments")
    assert [(r["start_s"], r["end_s"]) for r in segments] == [(0.0, 4.0), (4.0, 6.0)]
    for table in ("segments", "videos", "errors"):
        assert comparable(external, table) == comparable(reference, table), table


# --- building the job without running it -----------------------------------------------------------

def build_graph(options: PipelineOptions, config: BuildConfig | None = None) -> beam.Pipeline:
    """The full build pipeline on ``options``, constructed but not run."""
    config = config or make_config("gs://plm-videos/in", "gs://plm-videos/index", "gs://plm-models/Perception-LM-1B")
    run = RunContext(run_id="r1", settings_hash=config.settings_hash(), model_id=config.model.model,
                     generation=config.generation_json(), pipeline_version="test",
                     created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    videos = [VideoInput("gs://plm-videos/in/a.mp4"), VideoInput("gs://plm-videos/in/b.mkv")]
    p = beam.Pipeline(options=options)
    pipeline(p, config, run, videos, config.model.model)
    return p


INFRA = Path(__file__).resolve().parents[2] / "infra"


def launch_script_args(tmp_path: Path) -> list[str]:
    """The ``plm-index`` arguments ``infra/dataflow/launch.sh`` runs, captured by a stand-in command."""
    captured = tmp_path / "argv.json"
    stand_in = tmp_path / "plm-index"
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\n"
                        f"json.dump(sys.argv[1:], open({str(captured)!r}, 'w'))\n")
    stand_in.chmod(0o755)
    env = {**os.environ, "PROJECT": "plm-test-project", "REGION": "us-central1", "BUCKET": "plm-test-bucket",
           "IMAGE": IMAGE, "INPUT": "gs://plm-videos/in", "OUTPUT": "gs://plm-videos/index",
           "MODEL": "gs://plm-models/Perception-LM-1B", "MAX_WORKERS": "4", "PLM_INDEX": str(stand_in)}
    done = subprocess.run(["bash", str(INFRA / "dataflow" / "launch.sh"), "--batch-size", "8"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(captured.read_text())


def test_launch_script_refuses_missing_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT", "BUCKET", "IMAGE")}
    done = subprocess.run(["bash", str(INFRA / "dataflow" / "launch.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "PROJECT" in done.stderr and "IMAGE" in done.stderr


def test_dataflow_dry_run_builds_the_gpu_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipeline.cli import build_parser
    from pipeline.options import build_config

    try:
        from apache_beam.runners.dataflow.internal import apiclient
    except ImportError as exc:
        pytest.fail(f"DataflowRunner needs google-cloud-dataflow-client (add it to the test extra): {exc}")
    # Nothing here may reach Google: no credentials to find, no network to use.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-credentials.json"))
    # The exact flags the documented launch script passes, plus --dry_run.
    args, beam_args = build_parser().parse_known_args(launch_script_args(tmp_path))
    assert (args.command, args.model, args.batch_size) == ("build", "gs://plm-models/Perception-LM-1B", 8)
    options = beam_options([*beam_args, "--dry_run=True"])
    result = build_graph(options, build_config(args, args.model)).run()
    result.wait_until_finish()
    job = result.job  # dry_run stops right before staging and submission
    assert job.proto.name and job.proto.type_.name == "JOB_TYPE_BATCH"

    # Every transform runs in one Docker environment: the custom worker image.
    proto = job.proto_pipeline
    envs = {env_id: env for env_id, env in proto.components.environments.items()
            if env.urn == common_urns.environments.DOCKER.urn}
    assert len(envs) == 1, proto.components.environments
    (env_id, env), = envs.items()
    payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
    assert payload.container_image == IMAGE
    names = [t.unique_name for t in proto.components.transforms.values() if t.environment_id == env_id]
    for step in ("Inputs", "Probe", "Plan", "Decode", "Infer", "Parse", "Gather", "Embed", "Commit", "Account"):
        assert any(name == step or name.startswith(step + "/") for name in names), step

    # The description create_job would send, built offline from the same job (the step dry_run skips).
    environment = apiclient.Environment(
        packages=[], options=job.options, environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url="gs://plm-test-bucket/staging/pipeline.pb", proto_pipeline=proto).proto
    assert ACCELERATOR in list(environment.service_options)
    assert "use_runner_v2" in list(environment.experiments)
    (pool,) = environment.worker_pools
    assert (pool.machine_type, pool.disk_size_gb) == ("g2-standard-8", 200)
    assert pool.autoscaling_settings.max_num_workers == 4
    assert pool.worker_harness_container_image == IMAGE
    assert [image.container_image for image in pool.sdk_harness_container_images] == [IMAGE]
    sdk_options = dict(environment.sdk_pipeline_options["options"])
    assert sdk_options["sdk_container_image"] == IMAGE
    assert ACCELERATOR in list(sdk_options["dataflow_service_options"])


def test_infra_files_match_the_installed_beam() -> None:
    import yaml
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    beam_version = beam.__version__
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert f"ARG BEAM_VERSION={beam_version}\n" in dockerfile
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile
    assert f"beam_python{sys.version_info.major}.{sys.version_info.minor}_sdk" in dockerfile
    compose = yaml.safe_load((INFRA / "flink" / "docker-compose.yml").read_text())
    services = compose["services"]
    job_server = services["job-server"]["image"]
    flink_version = job_server.split("beam_flink", 1)[1].split("_job_server", 1)[0]
    assert job_server == f"apache/beam_flink{flink_version}_job_server:{beam_version}"
    assert flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    for name in ("jobmanager", "taskmanager"):
        assert services[name]["image"].startswith(f"flink:{flink_version}"), name
    pool = services["beam-worker-pool"]
    assert pool["command"] == ["--worker_pool"] and pool["network_mode"] == "service:taskmanager"
    script = (INFRA / "dataflow" / "launch.sh").read_text()
    assert "eval" not in script.split()


def test_pipeline_proto_round_trips_and_dofns_pickle() -> None:
    p = build_graph(PipelineOptions([]))
    proto = p.to_runner_api()
    again = beam.Pipeline.from_runner_api(proto, p.runner, p._options).to_runner_api()
    names = sorted(t.unique_name for t in proto.components.transforms.values())
    assert names == sorted(t.unique_name for t in again.components.transforms.values())
    assert len(proto.components.pcollections) == len(again.components.pcollections)
    assert any(name.startswith("Infer") for name in names)

    # Every ParDo payload in the proto unpickles; every DoFn object survives dumps/loads.
    pardos = [t for t in proto.components.transforms.values()
              if t.spec.urn == common_urns.primitives.PAR_DO.urn]
    assert len(pardos) >= 8
    for transform in pardos:
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
        if payload.do_fn.urn == "beam:dofn:pickled_python_info:v1":
            assert pickler.loads(payload.do_fn.payload) is not None, transform.unique_name

    fns: list[object] = []

    class Collect(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node: beam.pipeline.AppliedPTransform) -> None:
            if isinstance(node.transform, beam.ParDo):
                fns.append(node.transform.fn)

    p.visit(Collect())
    kinds = {type(fn).__name__ for fn in fns}
    for expected in ("ProbeVideos", "PlanClips", "SampleFrames", "ExpandClips", "ParseOutcomes", "GatherVideos",
                     "EmbedVideos", "CommitVideos"):
        assert expected in kinds, kinds
    for fn in fns:
        assert type(pickler.loads(pickler.dumps(fn))) is type(fn)
