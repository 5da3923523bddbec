#!/usr/bin/env python3
"""The Mage oracle: Mage 0.9.80's own code, asked what it would do.

Reads JSON lines on stdin (one case per line), writes one JSON line per case on stdout,
flushed after each. Run it with `scripts/mage-oracle run` (the pinned venv). The stand-ins
for the database, Mage's HTTP server, the Kubernetes API server and the clock are all in
tests/mage/stubs.py; the Mage Pro policy rule (not Mage's code) is in tests/mage/pro.py.
See tests/mage/README.md for the case format.

    scripts/mage-oracle run < tests/mage/examples.jsonl
    scripts/mage-oracle run --isolate < cases.jsonl   # one fresh process per case

Modes:
  job   Mage builds the Job against the FakeApiServer: output {"id", "namespace", "job"}
  live  no Kubernetes stand-ins: Mage's JobManager talks to the API server of the case's
        KUBECONFIG, creates the Job and waits for it: output adds "succeeded"
  idle  Mage's check_auto_termination on a main project's workspaces: output {"id",
        "stop": {workspace: bool}, "activity": {workspace: what get_workload_activity gave}}
Where Mage's code raises: {"id", "error": "Type: message", "where": "Qualified.function",
"at": "mage_ai/...py:line"} (plus whatever was recorded before the error).
"""

import importlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pro  # noqa: E402
import stubs  # noqa: E402

stubs.install_module_stubs()

# The process environment a case starts from: only what any process needs. Everything a
# Mage server would read comes from the case's "env" (plus the oracle's own MAGE_DATA_DIR,
# MAGE_REPO_PATH and TZ=UTC unless the case sets them).
BASE_ENV_KEYS = ('PATH', 'HOME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TMPDIR',
                 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'SYSTEMROOT')
BASE_ENV = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}

# Modules that read the environment when imported, in dependency order: reloaded after the
# case's environment is set, as a Mage server process started with that environment would
# have them (constants.py, settings/server.py; the others bind those values at import).
RELOAD_JOB = (
    'mage_ai.services.k8s.constants',
    'mage_ai.settings.server',
    'mage_ai.settings',
    'mage_ai.services.k8s.config',
    'mage_ai.services.k8s.job_manager',
    'mage_ai.data_preparation.executors.k8s_block_executor',
)
RELOAD_IDLE = (
    'mage_ai.services.k8s.constants',
    'mage_ai.settings.server',
    'mage_ai.settings',
    'mage_ai.cluster_manager.kubernetes.workload_manager',
    'mage_ai.cluster_manager.workspace.kubernetes',
    'mage_ai.cluster_manager.manage',
)

WORK = None          # the oracle's scratch folder (main makes it, and removes it on exit)
MAGE_ROOT = None
CASE_COUNT = [0]


def reload_modules(names):
    mods = []
    for name in names:
        if name in sys.modules:
            mods.append(importlib.reload(sys.modules[name]))
        else:
            mods.append(importlib.import_module(name))
    return mods[-1]


def set_environment(case_env, case_dir):
    os.environ.clear()
    os.environ.update(BASE_ENV)
    os.environ['MAGE_DATA_DIR'] = os.path.join(case_dir, 'mage_data')
    os.environ['MAGE_REPO_PATH'] = os.path.join(case_dir, 'repo')
    os.environ['TZ'] = 'UTC'
    for key, value in (case_env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(value)
    time.tzset()


def write_files(files):
    for path, text in (files or {}).items():
        if not os.path.isabs(path):
            raise ValueError(f'files: {path!r} is not an absolute path')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            f.write(text)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def describe_error(exc):
    """Type: message, and the innermost frame of Mage's code the exception passed through
    (where), with the innermost frame overall (origin) when that is elsewhere (e.g. in
    the kubernetes models)."""
    frames = traceback.extract_tb(exc.__traceback__)
    tb = exc.__traceback__
    codes = []
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    out = {'error': f'{type(exc).__name__}: {exc}'}
    mage = [(f, c) for f, c in zip(frames, codes) if f.filename.startswith(MAGE_ROOT)]
    if mage:
        f, c = mage[-1]
        # A comprehension's frame stands for the function it is written in.
        out['where'] = re.sub(r'(\.<locals>)?\.<(listcomp|dictcomp|setcomp|genexpr)>$', '',
                              getattr(c, 'co_qualname', c.co_name))
        out['at'] = f'{os.path.relpath(f.filename, os.path.dirname(MAGE_ROOT))}:{f.lineno}'
    if frames and (not mage or frames[-1] is not mage[-1][0]):
        f, c = frames[-1], codes[-1]
        where = f.filename
        site = os.path.dirname(MAGE_ROOT)
        if where.startswith(site + os.sep):
            where = os.path.relpath(where, site)
        out['origin'] = f'{getattr(c, "co_qualname", c.co_name)} ({where}:{f.lineno})'
    return out


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout('the case took longer than its timeout_seconds')


# ------------------------------------------------------------------------------------------
# mode job / live
# ------------------------------------------------------------------------------------------

def run_job_case(case, case_dir, live):
    out = {}
    repo = os.path.join(case_dir, 'repo')
    os.makedirs(repo, exist_ok=True)
    if case.get('project_metadata_yaml') is not None:
        write(os.path.join(repo, 'metadata.yaml'), case['project_metadata_yaml'])
    pipeline_uuid = case.get('pipeline_uuid') or 'oracle_pipeline'
    pipeline_path = None
    if case.get('pipeline_metadata_yaml') is not None:
        pipeline_path = os.path.join(repo, 'pipelines', pipeline_uuid, 'metadata.yaml')
        write(pipeline_path, case['pipeline_metadata_yaml'])

    if live:
        transports = []
        stubs.install_transport(lambda real: transports.append(
            stubs.RecordingTransport(real)) or transports[-1])
        stubs.no_kube_config_loading(False)
        # kubernetes reads KUBECONFIG when kubernetes.config.kube_config is imported.
        importlib.reload(sys.modules['kubernetes.config.kube_config'])
    else:
        fake = stubs.FakeApiServer(server_pod=case.get('server_pod'))
        stubs.install_transport(lambda real: fake)
        stubs.no_kube_config_loading(True)

    kbe = reload_modules(RELOAD_JOB)
    if not live:
        stubs.no_sleep(sys.modules['mage_ai.services.k8s.job_manager'])
    hook = pro.install_policy_hook(
        kbe, sys.modules['mage_ai.services.k8s.job_manager'], case.get('policy'), os.environ)

    from mage_ai.data_preparation.repo_manager import RepoConfig

    def recorded():
        if live:
            created = [c for t in transports for c in t.created]
        else:
            created = fake.created
            out['pod_read'] = fake.pod_reads[-1] if fake.pod_reads else None
        if created:
            out['namespace'], out['job'] = created[-1]
        if hook.effective_config is not None:
            out['executor_config'] = {'mage': hook.user_config,
                                      'effective': hook.effective_config}

    try:
        repo_config = RepoConfig(repo_path=repo)
        pipeline = stubs.StubPipeline(pipeline_uuid, repo, repo_config, pipeline_path)
        executor = kbe.K8sBlockExecutor(pipeline, case.get('block_uuid'))
        if live:
            signal.signal(signal.SIGALRM, _alarm)
            signal.alarm(int(case.get('timeout_seconds') or 300))
        try:
            executor._execute(
                block_run_id=case.get('block_run_id'),
                global_vars=case.get('global_vars'),
            )
        finally:
            if live:
                signal.alarm(0)
        if live:
            out['succeeded'] = True
    except Exception as exc:  # Mage's code raised: that is an answer too
        out.update(describe_error(exc))
        if live:
            out['succeeded'] = False
    recorded()
    return out


# ------------------------------------------------------------------------------------------
# mode idle
# ------------------------------------------------------------------------------------------

DEFAULT_MAIN_PROJECT = 'project_type: main\ncluster_type: k8s\n'


def run_idle_case(case, case_dir):
    import yaml

    out = {}
    repo = os.path.join(case_dir, 'repo')
    os.makedirs(os.path.join(repo, 'projects'), exist_ok=True)
    project = case.get('project_metadata_yaml')
    write(os.path.join(repo, 'metadata.yaml'),
          DEFAULT_MAIN_PROJECT if project is None else project)

    pods, outputs, names = [], {}, []
    for i, ws in enumerate(case.get('workspaces') or []):
        name = ws['name']
        names.append(name)
        config_yaml = ws.get('config_yaml')
        if config_yaml is None:
            config_yaml = yaml.safe_dump(ws.get('config') or {})
        path = os.path.join(repo, 'projects', f'{name}.yaml')
        write(path, config_yaml)
        # Mage lists workspaces newest file first (manage.py:79): keep the case's order.
        t = time.time() - i
        os.utime(path, (t, t))
        ws_pods = ws.get('pods')
        if ws_pods is None:
            ws_pods = [{'apiVersion': 'v1', 'kind': 'Pod',
                        'metadata': {'name': f'{name}-0', 'labels': {'app': name}},
                        'spec': {'containers': [{'name': name, 'image': 'mageai/mageai'}]}}]
        pods.extend(ws_pods)
        text = ws.get('statuses_response')
        if text is None and 'activity' in ws:
            text = json.dumps({'statuses': [ws['activity']], 'metadata': {}})
        for p in ws_pods:
            outputs[(p.get('metadata') or {}).get('name')] = text or ''

    fake = stubs.FakeApiServer(server_pod=case.get('server_pod'), pods=pods)
    stubs.install_transport(lambda real: fake)
    stubs.no_kube_config_loading(True)
    stubs.fake_exec_channel(outputs)
    manage = reload_modules(RELOAD_IDLE)
    stubs.frozen_utcnow(manage, case['now'])

    from mage_ai.data_preparation.repo_manager import get_cluster_type

    try:
        # What the main project's server runs every 60 s (server/server.py:717-722).
        manage.check_auto_termination(get_cluster_type())
    except Exception as exc:
        out.update(describe_error(exc))
    stopped = {name for (_ns, kind, name, body) in fake.patches
               if kind == 'StatefulSet' and ((body or {}).get('spec') or {}).get('replicas') == 0}
    out['stop'] = {name: name in stopped for name in names}
    out['exec'] = list(stubs.FakeExecChannel.commands)

    # The same real function check_auto_termination called, again, to show its answer
    # (check_auto_termination swallows every exception: manage.py:151).
    from mage_ai.cluster_manager.workspace.kubernetes import KubernetesWorkspace

    activity = {}
    for name in names:
        try:
            ws = KubernetesWorkspace(name)
            activity[name] = ws.workload_manager.get_workload_activity(name)
        except Exception as exc:
            activity[name] = describe_error(exc)
    out['activity'] = activity
    return out


# ------------------------------------------------------------------------------------------

def run_case(case):
    CASE_COUNT[0] += 1
    case_dir = os.path.join(WORK, f'case-{CASE_COUNT[0]}')
    os.makedirs(case_dir)
    mode = case.get('mode') or 'job'
    result = {'id': case.get('id')}
    captured = io.StringIO()
    real_stdout, real_stderr = sys.stdout, sys.stderr
    stubs.CASE.reset(case)
    try:
        set_environment(case.get('env'), case_dir)
        write_files(case.get('files'))
        sys.stdout = sys.stderr = captured
        if mode in ('job', 'live'):
            result.update(run_job_case(case, case_dir, live=(mode == 'live')))
        elif mode == 'idle':
            result.update(run_idle_case(case, case_dir))
        else:
            raise ValueError(f'unknown mode {mode!r} (job, live, idle)')
    except Exception as exc:  # the oracle's own failure, not an answer of Mage's code
        result['oracle_error'] = ''.join(traceback.format_exception(exc))
    finally:
        sys.stdout, sys.stderr = real_stdout, real_stderr
        # (case folders go when the oracle exits: removing each costs more than the case)
    if stubs.CASE.logger.messages:
        result['log'] = stubs.CASE.logger.messages
    printed = captured.getvalue()
    if printed:
        result['printed'] = printed
    return result


def main(argv):
    global MAGE_ROOT, WORK
    isolate = '--isolate' in argv[1:]
    out = sys.stdout
    if isolate:
        for line in sys.stdin:
            if not line.strip():
                continue
            p = subprocess.run([sys.executable, os.path.abspath(__file__)], input=line,
                               capture_output=True, text=True)
            if p.returncode != 0:
                sys.stderr.write(p.stderr)
                return p.returncode
            out.write(p.stdout)
            out.flush()
        return 0

    WORK = tempfile.mkdtemp(prefix='mage-oracle-')
    import mage_ai
    MAGE_ROOT = os.path.dirname(os.path.abspath(mage_ai.__file__))
    # Import the paths once (the reloads per case are then cheap).
    reload_modules(RELOAD_JOB)
    reload_modules(RELOAD_IDLE)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                case = json.loads(line)
            except json.JSONDecodeError as exc:
                result = {'id': None, 'oracle_error': f'bad JSON line: {exc}'}
            else:
                result = run_case(case)
            out.write(json.dumps(result, sort_keys=True) + '\n')
            out.flush()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
