"""Sampler and scheduler names ComfyUI accepts, and the A1111 names members type (data only)."""

from __future__ import annotations

# ComfyUI 0.8.0's KSampler lists (comfy/samplers.py). The list grows between releases.
SAMPLERS: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde",
    "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm",
    "lcm", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp",
    "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)  # fmt: skip

SCHEDULERS: tuple[str, ...] = (
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
)  # fmt: skip

# A1111 / Forge sampler names -> (ComfyUI sampler, ComfyUI scheduler).
A1111_SAMPLERS: dict[str, tuple[str, str]] = {
    "Euler a": ("euler_ancestral", "normal"),
    "Euler": ("euler", "normal"),
    "LMS": ("lms", "normal"),
    "LMS Karras": ("lms", "karras"),
    "Heun": ("heun", "normal"),
    "DPM2": ("dpm_2", "normal"),
    "DPM2 a": ("dpm_2_ancestral", "normal"),
    "DPM2 Karras": ("dpm_2", "karras"),
    "DPM2 a Karras": ("dpm_2_ancestral", "karras"),
    "DPM++ 2S a": ("dpmpp_2s_ancestral", "normal"),
    "DPM++ 2S a Karras": ("dpmpp_2s_ancestral", "karras"),
    "DPM++ 2M": ("dpmpp_2m", "normal"),
    "DPM++ 2M Karras": ("dpmpp_2m", "karras"),
    "DPM++ SDE": ("dpmpp_sde", "normal"),
    "DPM++ SDE Karras": ("dpmpp_sde", "karras"),
    "DPM++ 2M SDE": ("dpmpp_2m_sde", "normal"),
    "DPM++ 2M SDE Karras": ("dpmpp_2m_sde", "karras"),
    "DPM++ 2M SDE Exponential": ("dpmpp_2m_sde", "exponential"),
    "DPM++ 3M SDE": ("dpmpp_3m_sde", "normal"),
    "DPM++ 3M SDE Karras": ("dpmpp_3m_sde", "karras"),
    "DPM++ 3M SDE Exponential": ("dpmpp_3m_sde", "exponential"),
    "DPM fast": ("dpm_fast", "normal"),
    "DPM adaptive": ("dpm_adaptive", "normal"),
    "DDIM": ("ddim", "ddim_uniform"),
    "UniPC": ("uni_pc", "normal"),
    "LCM": ("lcm", "normal"),
    "DDPM": ("ddpm", "normal"),
    "DEIS": ("deis", "normal"),
}

# The name shown back to a member for a (sampler, scheduler) pair, A1111 style where one exists.
DISPLAY_NAMES: dict[tuple[str, str], str] = {pair: name for name, pair in A1111_SAMPLERS.items()}

# A1111 1.9+ writes the sampler and its "Schedule type" separately: these are both halves.
A1111_BASE_NAMES: dict[str, str] = {
    sampler: name
    for name, (sampler, _) in A1111_SAMPLERS.items()
    if not name.endswith((" Karras", " Exponential"))
}
A1111_SCHEDULE_LABELS: dict[str, str] = {
    "normal": "Normal",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
    "linear_quadratic": "Linear Quadratic",
}


def display_name(sampler: str, scheduler: str) -> str:
    return DISPLAY_NAMES.get((sampler, scheduler), f"{sampler} / {scheduler}")
