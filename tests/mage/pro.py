"""The Mage Pro policy layer for the oracle. THIS IS NOT MAGE'S CODE.

Mage Pro reads a default K8s executor config file (K8S_DEFAULT_CONFIG_PATH, with `enabled` and
`enforce`) and K8S_EXECUTOR_DEFAULT_* variables; the open-source mage-ai 0.9.80 has neither.
`apply_pro_policy` below is the rule as the seed document describes it
(/work/shared/seeds/001_*.txt, "Default config file" and "Default Resource Configuration"),
written with Mage's own `merge_dict`. It is the only rule in the oracle that is not Mage's
own code, and it is hooked in at one point: the dict K8sBlockExecutor.__init__ hands to
K8sExecutorConfig.load (k8s_block_executor.py:28). Everything before (Mage's project + block
merge) and after (K8sExecutorConfig.load, JobManager) is Mage's code.
"""

# K8S_EXECUTOR_DEFAULT_* variable -> the resources section and key of the Job's container it
# fills (None: the service account).
ENV_DEFAULTS = (
    ('K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_CPU', ('requests', 'cpu')),
    ('K8S_EXECUTOR_DEFAULT_RESOURCE_REQUESTS_MEMORY', ('requests', 'memory')),
    ('K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_CPU', ('limits', 'cpu')),
    ('K8S_EXECUTOR_DEFAULT_RESOURCE_LIMITS_MEMORY', ('limits', 'memory')),
    ('K8S_EXECUTOR_DEFAULT_SERVICE_ACCOUNT_NAME', None),
)


def apply_pro_policy(user_config, policy):
    """THE SEED'S RULE, NOT MAGE'S CODE: the default config file merged into the dict Mage
    hands to K8sExecutorConfig.load.

    user_config: what Mage computed, merge_dict(project k8s_executor_config, block
                 executor_config) (or the project's alone when the block has none).
    policy:      None, or {"enabled": bool, "enforce": bool, "config": {...}}: the default
                 config file, with `enabled`/`enforce` taken out and the rest in `config`.

    An enabled policy is merged with the user config one level deep, like every Mage merge
    (merge_dict: a key present on the winning side replaces the whole value):
    enforce true  -> merge_dict(user, policy)   the policy wins on every key it has;
    enforce false -> merge_dict(policy, user)   the policy only fills keys the user config
                                                does not have.
    The result is a new dict; the inputs are not changed.
    """
    from mage_ai.shared.hash import merge_dict

    config = merge_dict(user_config, {})
    if policy and policy.get('enabled'):
        policy_config = policy.get('config') or {}
        if policy.get('enforce'):
            config = merge_dict(config, policy_config)
        else:
            config = merge_dict(policy_config, config)
    return config


def fill_env_defaults(job, k8s_config, environ):
    """THE SEED'S RULE, NOT MAGE'S CODE: K8S_EXECUTOR_DEFAULT_* replace Mage's hardcoded
    defaults ("Priority: block, project, env var defaults, hardcoded"), on the Job
    JobManager.create_job_object built: a CPU or memory request or limit the Job's container
    lacks, and the service account when no layer named one (neither a top-level
    `service_account_name` nor `pod.service_account_name`, template included: the Job
    would get Mage's hardcoded `default`)."""
    container = job.spec.template.spec.containers[0]
    pod = k8s_config.pod if isinstance(k8s_config.pod, dict) else {}
    names_account = bool(k8s_config.service_account_name) or bool(
        pod and pod.get('service_account_name'))
    for variable, target in ENV_DEFAULTS:
        value = environ.get(variable)
        if value is None or value == '':
            continue
        if target is None:
            if not names_account:
                job.spec.template.spec.service_account_name = value
            continue
        section, key = target
        resources = container.resources
        if resources is None:
            resources = {}
            container.resources = resources
        if isinstance(resources, dict):
            current = resources.get(section)
            if current is None:
                resources[section] = {key: value}
            elif isinstance(current, dict) and key not in current:
                current[key] = value
        else:
            current = getattr(resources, section)
            if current is None:
                setattr(resources, section, {key: value})
            elif isinstance(current, dict) and key not in current:
                current[key] = value


class PolicyHook:
    """Takes the place of the name `K8sExecutorConfig` inside the k8s_block_executor module
    only (K8sBlockExecutor.__init__ calls `K8sExecutorConfig.load(config=...)` there): the
    dict Mage computed goes through apply_pro_policy, then to the real
    K8sExecutorConfig.load. Also keeps both dicts for the case's output."""

    def __init__(self, real_class, policy, environ):
        self.real_class = real_class
        self.policy = policy
        self.environ = environ
        self.user_config = None
        self.effective_config = None

    def load(self, config_path=None, config=None):
        self.user_config = config
        self.effective_config = apply_pro_policy(config, self.policy)
        return self.real_class.load(config_path=config_path, config=self.effective_config)

    def __getattr__(self, name):
        return getattr(self.real_class, name)


def install_policy_hook(k8s_block_executor_module, job_manager_module, policy, environ):
    """Hooks the seed's two rules in where Mage Pro would apply them: the default config
    file into the dict `K8sExecutorConfig.load` receives, the env-var defaults onto the Job
    `JobManager.create_job_object` returns."""
    hook = PolicyHook(k8s_block_executor_module.K8sExecutorConfig, policy, environ)
    k8s_block_executor_module.K8sExecutorConfig = hook
    manager = job_manager_module.JobManager
    real_create = manager.create_job_object

    def create_job_object(self, command, k8s_config=None):
        job = real_create(self, command, k8s_config=k8s_config)
        fill_env_defaults(job, k8s_config, environ)
        return job

    manager.create_job_object = create_job_object
    return hook
