"""A step-aware Docker executor: dagster-docker's, with the image and the GPU chosen per step.

dagster-docker's ``docker_executor`` starts every step of a run in a container of one image with one
container configuration, so either every step holds a GPU or none does. Here a step whose op tag
``codon_assets/compute`` is ``gpu`` (``evo2_features``) runs in ``gpu_image`` with ``gpu_container_kwargs``
(one GPU requested) added; every other step runs in the CPU image (``image``, else the code location's
image) without them. Everything else (container names, health checks, termination, retries) is
dagster-docker's own step handler.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.step_delegating import StepDelegatingExecutor
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._utils.merger import merge_dicts
from dagster_docker.container_context import DockerContainerContext
from dagster_docker.docker_executor import DockerStepHandler
from dagster_docker.utils import DOCKER_CONFIG_SCHEMA, validate_docker_config

from codon_assets.deployment import is_gpu_step


class GpuRoutedStepHandler(DockerStepHandler):
    def __init__(self, image: str | None, container_context: DockerContainerContext, gpu_image: str,
                 gpu_container_kwargs: dict):
        super().__init__(image, container_context)
        self._gpu_image = gpu_image
        self._gpu_context = DockerContainerContext(container_kwargs=gpu_container_kwargs)

    @property
    def name(self) -> str:
        return "GpuRoutedStepHandler"

    def _gpu_step(self, step_handler_context: StepHandlerContext) -> bool:
        return is_gpu_step(step_handler_context.step_tags[self._get_step_key(step_handler_context)])

    def _get_image(self, step_handler_context: StepHandlerContext) -> str:
        if self._gpu_step(step_handler_context):
            return self._gpu_image
        return super()._get_image(step_handler_context)

    def _get_docker_container_context(self, step_handler_context: StepHandlerContext) -> DockerContainerContext:
        context = super()._get_docker_container_context(step_handler_context)
        return context.merge(self._gpu_context) if self._gpu_step(step_handler_context) else context


@dg.executor(
    name="gpu_routed_docker",
    config_schema=merge_dicts(
        DOCKER_CONFIG_SCHEMA,
        {
            "gpu_image": dg.Field(str, description="image of the steps tagged codon_assets/compute=gpu"),
            "gpu_container_kwargs": dg.Field(dg.Permissive(), is_required=False, default_value={},
                                             description="container kwargs added for those steps (GPU request)"),
            "retries": get_retries_config(),
            "max_concurrent": dg.Field(int, is_required=False),
        },
    ),
    requirements=multiple_process_executor_requirements(),
)
def gpu_routed_docker_executor(init_context: dg.InitExecutorContext) -> StepDelegatingExecutor:
    config = init_context.executor_config
    networks = config.get("networks") or ([config["network"]] if config.get("network") else [])
    validate_docker_config(None, networks, config.get("container_kwargs"))
    validate_docker_config(None, [], config["gpu_container_kwargs"])
    container_context = DockerContainerContext(
        registry=config.get("registry"),
        env_vars=config.get("env_vars") or [],
        networks=networks,
        container_kwargs=config.get("container_kwargs"),
    )
    return StepDelegatingExecutor(
        GpuRoutedStepHandler(config.get("image"), container_context, config["gpu_image"],
                             config["gpu_container_kwargs"]),
        retries=RetryMode.from_config(config["retries"]),
        max_concurrent=config.get("max_concurrent"),
    )
