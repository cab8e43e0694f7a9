"""The signup form for the organisation's own website ('newsletter signup-form').

An HTML snippet to paste into the website (a CMS's HTML block): a plain form that posts to
``<base_url>/signup`` and works without JavaScript, a "change my subscription" form, and the
scripts that add the proof of work and answer in place (``templates/web/embed.html.j2``,
``static/signup.js``, the ALTCHA widget in ``static/altcha/``). Everything it loads comes from
``base_url``; it has no styles of its own but the hidden robot trap.
"""

from __future__ import annotations

from .config import Settings
from .emissions import project_members
from .errors import ConfigError
from .guard import allowed_origins, origin_of
from .i18n import load_strings
from .language import _
from .render import template_folders, web_environment
from .subscribers import resolve_topics


def signup_form(
    settings: Settings,
    language: str,
    *,
    topics: tuple[str, ...] = (),
    municipality_field: bool = False,
    script: bool = True,
    change: bool = True,
    return_url: str | None = None,
) -> str:
    """The snippet in ``language`` (nb or en). ``topics``: the focus areas offered as checkboxes
    ('all' for every one; none: the subscriber gets them all). Refuses (ConfigError) when no
    website may post to the signup (web.allowed_origins), or ``return_url`` is not on one."""
    origins = allowed_origins(settings)
    if not origins:
        raise ConfigError(
            _(
                "web.allowed_origins is empty, so 'serve' would refuse this form on the website; set it to the website's address, e.g. NEWSLETTER_WEB_ALLOWED_ORIGINS=https://osloregionen.no"
            )
        )
    if return_url and not return_url.startswith(("https://", "http://")):
        raise ConfigError(
            _("--return-url {url!r} is not a whole address; write it with https://, e.g. https://osloregionen.no/takk", url=return_url)
        )  # fmt: skip
    if return_url and origin_of(return_url) not in origins:
        raise ConfigError(
            _(
                "--return-url {url!r} is not on a website in web.allowed_origins ({origins}); give a page on one of them.",
                url=return_url,
                origins=", ".join(sorted(origins)),
            )
        )
    keys = [c.key for c in settings.categories] if "all" in topics else list(resolve_topics(topics, settings))
    strings = load_strings(template_folders(settings), language)
    members = project_members(settings) if municipality_field else ()
    context = {
        "lang": language,
        "t": strings,
        "newsletter_name": settings.display_name(language),
        "base_url": settings.base_url,
        "privacy_url": settings.web_privacy_url or f"{settings.base_url}/privacy?lang={language}",
        "return_url": return_url,
        "topics": [{"key": c.key, "label": c.label(language)} for c in settings.categories if c.key in keys],
        "municipalities": sorted(({"number": m.number_2024, "name": m.name} for m in members), key=lambda m: m["name"]),
        "script": script,
        "change": change,
    }
    env = web_environment(settings)
    env.trim_blocks = env.lstrip_blocks = True  # a snippet people read and paste: no empty lines
    return env.get_template("web/embed.html.j2").render(context).strip() + "\n"
