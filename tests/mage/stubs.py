"""Every stand-in the Mage oracle uses, in one place.

The oracle (tests/mage/oracle.py) runs Mage 0.9.80's own code: `K8sBlockExecutor.__init__`,
`_get_job_name_prefix` and `_execute`, `K8sExecutorConfig.load`, `JobManager.run_job` with
`create_job_object` / `merge_pod_spec` / `merge_container_spec` / `filter_used_volumes` /
`merge_containers`, `RepoConfig` (the project's metadata.yaml), `read_yaml_file` (the
pipeline's metadata.yaml), `check_auto_termination` with the real `KubernetesWorkspace`,
`WorkloadManager.get_workload_activity` and `scale_down_workload`, and the real kubernetes
client (its models, serialization, parameter checks, URL building, deserialization and
ApiException on a 404).

What it does not run is infrastructure: a database, Mage's own HTTP server, a Kubernetes API
server, the clock. Each stand-in for one of those is below, with why it is safe: none of them
holds a line of executor or idle logic. Nothing else in the oracle replaces Mage code; the
one piece that is not Mage's code at all, the Mage Pro policy layer, is in tests/mage/pro.py.

Stand-ins, in the order a case meets them:

  1. install_module_stubs()   modules that only exist to reach the database (sys.modules)
  2. StubBlockExecutor         the BlockExecutor base class (log storage, Project model,
                               dynamic-block wrappers, the `mage run` command line)
  3. StubPipeline, StubBlock   the Pipeline/Block models (they import pandas & co.)
  4. StubBlockRun              the BlockRun row `_get_job_name_prefix` reads
  5. RecordingLogger           Mage's DictLogger / log files
  6. no_kube_config_loading    kubernetes.config.load_incluster_config / load_kube_config
  7. FakeApiServer             the Kubernetes API server, at the HTTP transport
  8. FakeExecChannel           the WebSocket exec channel into a workspace pod, whose
                               output is what Mage's HTTP server would answer there
  9. no_sleep                  time.sleep inside JobManager.run_job's polling loop
 10. frozen_utcnow             datetime.utcnow inside check_auto_termination

`CASE` holds what the current case gives the stand-ins (oracle.py sets it per case).
"""

import datetime as _datetime
import json
import re
import sys
import types
from urllib.parse import parse_qs, unquote, urlparse


class CaseState:
    """What the stand-ins answer for the case being run (set by oracle.py per case)."""

    def __init__(self):
        self.case, self.command, self.trigger_name, self.logger = {}, None, None, None

    def reset(self, case):
        self.case = case
        self.command = case.get('command')
        self.trigger_name = case.get('trigger_name')
        self.logger = RecordingLogger()


CASE = CaseState()


# --------------------------------------------------------------------------------------------
# 1. Database-only modules
# --------------------------------------------------------------------------------------------

class _NoDatabase:
    """Any attribute use means Mage's code reached for the database: fail loudly."""

    def __init__(self, what):
        self._what = what

    def __getattr__(self, name):
        raise RuntimeError(f'the Mage oracle has no database ({self._what}.{name} was used)')


def _safe_db_query(func):
    """Stand-in for mage_ai.orchestration.db.safe_db_query.

    The real decorator (orchestration/db/__init__.py:155) calls the function and, only on a
    SQLAlchemy OperationalError / PendingRollbackError / InternalError, rolls the session back
    and retries. Without a database those errors cannot happen, so calling the function
    straight through is exactly what the real decorator does here.
    """
    return func


class StubProjectPipelines(types.SimpleNamespace):
    """See install_module_stubs: the project's `pipelines:` settings, kept as given."""

    @classmethod
    def load(cls, **kwargs):
        return cls(**kwargs)

    def to_dict(self):
        return dict(self.__dict__)


def install_module_stubs():
    """Put database-only modules into sys.modules before any Mage import.

    - mage_ai.data_preparation.executors.block_executor: the BlockExecutor base class (see
      StubBlockExecutor); the real module imports the logger manager, the Project model, the
      dynamic-block machinery and the DB models.
    - mage_ai.orchestration.db: only `safe_db_query` (see _safe_db_query) and `db_connection`
      are imported on the oracle's paths; the real module opens a SQLAlchemy engine.
    - mage_ai.orchestration.db.models(.schedules, .oauth): SQLAlchemy models. The executor
      path uses `BlockRun.query.get` (StubBlockRun); workspace/base.py imports `User` and
      `Permission` only for type hints and the access checks the idle rule never calls.
    Any other use of these reaches _NoDatabase and raises, so a Mage code path that needs
    the database cannot silently run against a stub.

    One more, not a database module: mage_ai.data_preparation.models.project.models, whose
    import pulls in numpy and pandas (shared/models.py -> shared/parsers.py). RepoConfig's
    `pipelines` setter imports it on every RepoConfig (repo_manager.py:204), before looking
    at the value, and uses `ProjectPipelines.load(**d)` only when the project metadata.yaml
    has a `pipelines:` mapping (project-wide pipeline settings: nothing the K8s executor
    or the idle rule reads). Without the stub, RepoConfig's own try/except would swallow the
    ImportError and skip every setting after `pipelines`. StubProjectPipelines keeps the
    mapping as attributes.
    """
    def module(name, package=False, **attrs):
        m = types.ModuleType(name)
        m.__doc__ = 'Mage oracle stub: see tests/mage/stubs.py'
        m.__dict__.update(attrs)
        if package:
            m.__path__ = []
        sys.modules[name] = m
        return m

    module('mage_ai.data_preparation.executors.block_executor', BlockExecutor=StubBlockExecutor)
    module('mage_ai.data_preparation.models.project.models', ProjectPipelines=StubProjectPipelines)
    module(
        'mage_ai.orchestration.db',
        package=True,
        safe_db_query=_safe_db_query,
        safe_db_query_async=_safe_db_query,
        db_connection=_NoDatabase('db_connection'),
    )
    module('mage_ai.orchestration.db.models', package=True)
    module(
        'mage_ai.orchestration.db.models.schedules',
        BlockRun=StubBlockRun,
        PipelineRun=_NoDatabase('PipelineRun'),
        PipelineSchedule=_NoDatabase('PipelineSchedule'),
    )
    module(
        'mage_ai.orchestration.db.models.oauth',
        User=_NoDatabase('User'),
        Permission=_NoDatabase('Permission'),
    )


# --------------------------------------------------------------------------------------------
# 2. BlockExecutor base class
# --------------------------------------------------------------------------------------------

class StubBlockExecutor:
    """Stand-in for mage_ai.data_preparation.executors.block_executor.BlockExecutor.

    K8sBlockExecutor takes from its base class only `self.pipeline`, `self.block`,
    `self.logger` (set in __init__) and `self._run_commands(...)` (called by `_execute`).
    The real __init__ (block_executor.py:58) sets the same attributes, plus a
    LoggerManager (log files/S3), a Project model (feature flags) and wrappers for dynamic
    blocks, none of which K8sBlockExecutor reads. `_run_commands` builds the `mage run ...`
    command line the Job's container runs; the case gives that command, and Mage's
    JobManager then handles it as it would (`command.split(' ')` if a string).
    """

    RETRYABLE = True

    def __init__(self, pipeline, block_uuid, execution_partition=None, block_run_id=None):
        self.pipeline = pipeline
        self.block_uuid = block_uuid
        self.execution_partition = execution_partition
        self.logger = CASE.logger
        self.retry_metadata = dict(attempts=0)
        self.block = self.pipeline.get_block(self.block_uuid, check_template=True)
        self.block_run = None

    def _run_commands(self, block_run_id=None, global_vars=None, **kwargs):
        return CASE.command


# --------------------------------------------------------------------------------------------
# 3. Pipeline / Block models
# --------------------------------------------------------------------------------------------

class StubBlock:
    """Stand-in for a Block: K8sBlockExecutor reads only `executor_config`, which the real
    Block.__init__ stores unchanged from the block's entry in the pipeline metadata.yaml
    (pipeline.py:919 passes `c.get('executor_config')`; block/__init__.py:385 stores it)."""

    def __init__(self, config):
        self.uuid = config.get('uuid')
        self.executor_config = config.get('executor_config')
        self.executor_type = config.get('executor_type')


class StubPipeline:
    """Stand-in for mage_ai.data_preparation.models.pipeline.Pipeline.

    The real Pipeline imports pandas, numpy, polars and the whole block machinery. What
    K8sBlockExecutor needs from it is `repo_config` (a real RepoConfig, built by the
    oracle from the project's metadata.yaml) and `get_block(uuid)`. The pipeline's
    metadata.yaml is read with Mage's own `mage_ai.cache.mem_lru.read_yaml_file` (the
    function Pipeline.get_config_from_yaml uses, pipeline.py:839, with the same PyYAML
    loader), and its `blocks` list is indexed by `uuid` as Pipeline.load_config does
    (a dict, so a later duplicate wins). `get_block` looks the uuid up, then its part
    before ':' (pipeline.py:1902-1910), and returns None if absent, as the real one does.
    """

    def __init__(self, uuid, repo_path, repo_config, config_path):
        from mage_ai.cache.mem_lru import read_yaml_file

        self.uuid = uuid
        self.repo_path = repo_path
        self.repo_config = repo_config
        config = read_yaml_file(config_path, encoding='utf-8') if config_path else {}
        self.config = config or {}
        self.blocks_by_uuid = {
            c.get('uuid'): StubBlock(c) for c in (self.config.get('blocks') or [])
        }

    def get_block(self, block_uuid, block_type=None, check_template=False, **kwargs):
        block = self.blocks_by_uuid.get(block_uuid)
        if not block:
            block = self.blocks_by_uuid.get(block_uuid.split(':')[0])
        if not block:
            print(f'[ERROR] Pipeline.get_block: block {block_uuid} does not exist in '
                  f'pipeline {self.uuid}', file=sys.stderr)
        return block


# --------------------------------------------------------------------------------------------
# 4. BlockRun
# --------------------------------------------------------------------------------------------

class _BlockRunQuery:
    def get(self, block_run_id):
        schedule = None
        if CASE.trigger_name is not None:
            schedule = types.SimpleNamespace(name=CASE.trigger_name)
        pipeline_run = types.SimpleNamespace(pipeline_schedule=schedule)
        return types.SimpleNamespace(id=block_run_id, pipeline_run=pipeline_run)


class StubBlockRun:
    """Stand-in for the BlockRun model (orchestration/db/models/schedules.py).

    `_get_job_name_prefix` (k8s_block_executor.py:75-78) reads
    `BlockRun.query.get(id).pipeline_run.pipeline_schedule.name`, and only when the prefix
    holds `{trigger_name}`. This row answers with the case's `trigger_name`; a null
    trigger_name is a run without a trigger (pipeline_schedule None), on which Mage's own
    code then fails as it would. The name cleaning (clean_name, '_' -> '-') stays Mage's.
    """

    query = _BlockRunQuery()


# --------------------------------------------------------------------------------------------
# 5. Logger
# --------------------------------------------------------------------------------------------

class RecordingLogger:
    """Stand-in for Mage's DictLogger (which writes the block's log file): keeps the
    messages JobManager._print sends, for the case's output ("log")."""

    def __init__(self):
        self.messages = []

    def _log(self, level, message, **kwargs):
        self.messages.append(f'{level}: {message}')

    def info(self, message, **kwargs):
        self._log('info', message, **kwargs)

    def warning(self, message, **kwargs):
        self._log('warning', message, **kwargs)

    def error(self, message, **kwargs):
        self._log('error', message, **kwargs)

    def exception(self, message, **kwargs):
        self._log('exception', message, **kwargs)

    def debug(self, message, **kwargs):
        self._log('debug', message, **kwargs)


# --------------------------------------------------------------------------------------------
# 6. Kubernetes config loading
# --------------------------------------------------------------------------------------------

_REAL_CONFIG_LOADERS = {}


def no_kube_config_loading(enabled=True):
    """Stand-in for kubernetes.config.load_incluster_config / load_kube_config.

    JobManager.load_config and WorkloadManager.load_config (job_manager.py:52,
    workload_manager.py:68) try both and ignore failures; they only pick the API server's
    address and credentials. The FakeApiServer answers whatever address the client uses,
    so loading is a no-op. `enabled=False` puts the real loaders back (mode "live").
    """
    import kubernetes.config as kconfig

    if not _REAL_CONFIG_LOADERS:
        _REAL_CONFIG_LOADERS['load_incluster_config'] = kconfig.load_incluster_config
        _REAL_CONFIG_LOADERS['load_kube_config'] = kconfig.load_kube_config
    for name, real in _REAL_CONFIG_LOADERS.items():
        setattr(kconfig, name, (lambda *a, **k: None) if enabled else real)


# --------------------------------------------------------------------------------------------
# 7. The Kubernetes API server
# --------------------------------------------------------------------------------------------

class _FakeHTTPResponse:
    """What urllib3 returns; the kubernetes client wraps it in its own RESTResponse."""

    def __init__(self, status, body):
        self.status = status
        self.reason = {200: 'OK', 201: 'Created', 404: 'Not Found'}.get(status, 'Error')
        self.data = json.dumps(body).encode('utf-8')
        self._headers = {'Content-Type': 'application/json'}

    def getheaders(self):
        return self._headers

    def getheader(self, name, default=None):
        return self._headers.get(name, default)


def _status(code, reason, message):
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {},
            'status': 'Failure' if code >= 400 else 'Success',
            'message': message, 'reason': reason, 'code': code}


class FakeApiServer:
    """Stand-in for the Kubernetes API server, at the one place the kubernetes client sends
    HTTP: the urllib3 PoolManager of each RESTClientObject (see install()).

    Everything above it is the real client: CoreV1Api/BatchV1Api/AppsV1Api parameter checks
    and URL building, ApiClient.sanitize_for_serialization of the request body, JSON
    encoding, RESTResponse, ApiException for a non-2xx status, deserialization into V1Pod /
    V1Job. It holds a few objects and answers only the calls Mage's code makes:

      GET    /api/v1/namespaces/{ns}/pods/{name}        the Mage server pod (`server_pod`);
             served under its metadata.name / metadata.namespace when it has them (else
             under any name), 404 otherwise, as a cluster holding that one pod would
      GET    /api/v1/namespaces/{ns}/pods                the workspace pods (mode "idle")
      GET    /apis/batch/v1/namespaces/{ns}/jobs/{name}  404 until created, then the Job
             with status.succeeded = 1 (so run_job's polling loop ends at once)
      POST   /apis/batch/v1/namespaces/{ns}/jobs         records (body, namespace)
      DELETE /apis/batch/v1/namespaces/{ns}/jobs/{name}  Status Success
      PATCH  /apis/apps/v1/namespaces/{ns}/statefulsets/{name}   records the patch
      anything else: 404, and recorded in `calls`.

    It does no validation of its own (object names, namespaces matching): mode "live"
    runs against a real API server for that.
    """

    def __init__(self, server_pod=None, pods=None):
        self.server_pod = server_pod
        self.pods = pods or []
        self.jobs = {}
        self.created = []          # [(namespace, body)]
        self.patches = []          # [(namespace, kind, name, body)]
        self.pod_reads = []        # [{'namespace':..., 'name':...}]
        self.calls = []            # ['METHOD /path']

    # urllib3.PoolManager.request(method, url, fields=None, headers=None, **kw)
    def request(self, method, url, fields=None, headers=None, body=None, **kwargs):
        path = unquote(urlparse(url).path)
        self.calls.append(f'{method} {path}')
        data = json.loads(body) if body else None

        m = re.fullmatch(r'/api/v1/namespaces/([^/]+)/pods/([^/]+)', path)
        if m and method == 'GET':
            ns, name = m.groups()
            self.pod_reads.append({'namespace': ns, 'name': name})
            pod = self.server_pod
            if pod is not None:
                meta = pod.get('metadata') or {}
                if meta.get('name') in (None, name) and meta.get('namespace') in (None, ns):
                    return _FakeHTTPResponse(200, pod)
            return _FakeHTTPResponse(404, _status(404, 'NotFound', f'pods "{name}" not found'))

        m = re.fullmatch(r'/api/v1/namespaces/([^/]+)/pods', path)
        if m and method == 'GET':
            ns = m.group(1)
            items = [p for p in self.pods
                     if (p.get('metadata') or {}).get('namespace') in (None, ns)]
            return _FakeHTTPResponse(200, {'kind': 'PodList', 'apiVersion': 'v1',
                                           'metadata': {}, 'items': items})

        m = re.fullmatch(r'/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?', path)
        if m:
            ns, name = m.groups()
            if method == 'POST' and name is None:
                self.created.append((ns, data))
                job = json.loads(json.dumps(data))
                job.setdefault('metadata', {})['namespace'] = ns
                job['status'] = {}
                self.jobs[(ns, job['metadata'].get('name'))] = job
                return _FakeHTTPResponse(201, job)
            if method == 'GET' and name is not None:
                job = self.jobs.get((ns, name))
                if job is None:
                    return _FakeHTTPResponse(
                        404, _status(404, 'NotFound', f'jobs.batch "{name}" not found'))
                done = json.loads(json.dumps(job))
                done['status'] = {'succeeded': 1}
                return _FakeHTTPResponse(200, done)
            if method == 'DELETE' and name is not None:
                self.jobs.pop((ns, name), None)
                return _FakeHTTPResponse(200, _status(200, '', ''))

        m = re.fullmatch(r'/apis/apps/v1/namespaces/([^/]+)/statefulsets/([^/]+)', path)
        if m and method == 'PATCH':
            ns, name = m.groups()
            self.patches.append((ns, 'StatefulSet', name, data))
            return _FakeHTTPResponse(200, {'kind': 'StatefulSet', 'apiVersion': 'apps/v1',
                                           'metadata': {'name': name, 'namespace': ns},
                                           'spec': (data or {}).get('spec', {})})

        return _FakeHTTPResponse(404, _status(404, 'NotFound', f'no fake for {method} {path}'))


class RecordingTransport:
    """Mode "live": not a stub. Forwards every request to the real urllib3 PoolManager and
    only notes the Job bodies POSTed, so the output can show what Mage sent."""

    def __init__(self, real):
        self.real = real
        self.created = []
        self.calls = []

    def request(self, method, url, fields=None, headers=None, body=None, **kwargs):
        path = unquote(urlparse(url).path)
        self.calls.append(f'{method} {path}')
        m = re.fullmatch(r'/apis/batch/v1/namespaces/([^/]+)/jobs', path)
        if m and method == 'POST' and body:
            self.created.append((m.group(1), json.loads(body)))
        if body is not None:
            kwargs['body'] = body
        if fields is not None:
            kwargs['fields'] = fields
        return self.real.request(method, url, headers=headers, **kwargs)


_TRANSPORT = {'factory': None}
_REAL_REST_INIT = {}


def install_transport(factory):
    """Make every kubernetes RESTClientObject created from now on send its HTTP requests to
    `factory(real_pool_manager)` (a FakeApiServer, or a RecordingTransport in mode live).
    The original __init__ still runs (it only builds the PoolManager, no connection)."""
    from kubernetes.client import rest

    if not _REAL_REST_INIT:
        _REAL_REST_INIT['init'] = rest.RESTClientObject.__init__

        def __init__(self, *args, **kwargs):
            _REAL_REST_INIT['init'](self, *args, **kwargs)
            if _TRANSPORT['factory'] is not None:
                self.pool_manager = _TRANSPORT['factory'](self.pool_manager)

        rest.RESTClientObject.__init__ = __init__
    _TRANSPORT['factory'] = factory


# --------------------------------------------------------------------------------------------
# 8. The exec channel into a workspace pod (and the Mage HTTP server answering in it)
# --------------------------------------------------------------------------------------------

class FakeExecChannel:
    """Stand-in for kubernetes.stream.ws_client.WSClient: the WebSocket that
    `stream(core_client.connect_get_namespaced_pod_exec, ...)` opens to run a command in a
    pod (workload_manager.py:662).

    In Mage, that command is `curl http://localhost:6789${BasePath}/api/statuses?_format=
    with_activity_details` inside the workspace pod, and what comes back is the stdout of
    curl: the body Mage's HTTP server answers. The case gives that body per workspace
    (`statuses_response`): it replaces both the WebSocket and the HTTP server behind curl.
    Everything around it is real: kubernetes' websocket_call builds the URL and wraps the
    text in a WSResponse, the ApiClient deserializes it as response_type 'str' (json.loads,
    then str() of the result: a Python repr), and Mage's code runs ast.literal_eval on that.
    """

    outputs = {}       # pod name -> text the exec prints
    commands = []      # [{'pod':..., 'namespace':..., 'command': [...]}]

    def __init__(self, configuration, url, headers, capture_all, binary=False):
        parsed = urlparse(url)
        m = re.fullmatch(r'/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec', unquote(parsed.path))
        self.namespace, self.pod = (m.groups() if m else (None, None))
        query = parse_qs(parsed.query)
        FakeExecChannel.commands.append({'namespace': self.namespace, 'pod': self.pod,
                                         'container': (query.get('container') or [None])[0],
                                         'command': query.get('command', [])})
        self._out = FakeExecChannel.outputs.get(self.pod, '')
        self._connected = True

    def run_forever(self, timeout=None):
        self._connected = False

    def read_all(self):
        out, self._out = self._out, ''
        return out

    def is_open(self):
        return self._connected

    def close(self, **kwargs):
        self._connected = False

    @property
    def returncode(self):
        return 0


_REAL_WSCLIENT = {}


def fake_exec_channel(outputs, enabled=True):
    from kubernetes.stream import ws_client

    if not _REAL_WSCLIENT:
        _REAL_WSCLIENT['cls'] = ws_client.WSClient
    FakeExecChannel.outputs = dict(outputs)
    FakeExecChannel.commands = []
    ws_client.WSClient = FakeExecChannel if enabled else _REAL_WSCLIENT['cls']


# --------------------------------------------------------------------------------------------
# 9. time.sleep in JobManager.run_job
# --------------------------------------------------------------------------------------------

def no_sleep(job_manager_module):
    """Stand-in for `time` inside mage_ai.services.k8s.job_manager only: run_job sleeps 5 s
    after each status read (job_manager.py:92). Against the FakeApiServer the Job has
    succeeded on the first read, so the sleep only costs time. Other modules keep the real
    time module. (Re-applied after every reload of job_manager.)"""
    import time as real_time

    job_manager_module.time = types.SimpleNamespace(
        sleep=lambda seconds: None, time=real_time.time, monotonic=real_time.monotonic)


# --------------------------------------------------------------------------------------------
# 10. The clock of check_auto_termination
# --------------------------------------------------------------------------------------------

def frozen_utcnow(manage_module, now_iso):
    """Stand-in for `datetime` inside mage_ai.cluster_manager.manage only, so that
    `datetime.utcnow()` (manage.py:145) is the case's `now`; `fromisoformat` and
    `timestamp()` stay the real ones (a subclass of datetime). `now` is read as UTC:
    an ISO time with an offset is converted to UTC, and made naive, as utcnow() returns.
    Note that Mage then calls `.timestamp()` on that naive value, which Python reads in the
    process's local time zone (TZ): the oracle keeps that, so a case can set TZ."""
    now = _datetime.datetime.fromisoformat(now_iso)
    if now.tzinfo is not None:
        now = now.astimezone(_datetime.timezone.utc).replace(tzinfo=None)

    class FrozenDatetime(_datetime.datetime):
        @classmethod
        def utcnow(cls):
            return cls(now.year, now.month, now.day, now.hour, now.minute, now.second,
                       now.microsecond)

    manage_module.datetime = FrozenDatetime
