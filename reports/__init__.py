"""Reports over the catalog: `status` (what `strongroom status` prints) and the preservation,
fixity and format reports (`strongroom report`, see reports.write)."""


def write_all(config, out_dir, lang: str = "en", **kwargs):
    """The three HTML reports in `out_dir`; returns their paths (see reports.write.write_all).
    Imported lazily so that `reports.status` does not load Jinja2 and matplotlib."""
    from reports.write import write_all as _write_all

    return _write_all(config, out_dir, lang=lang, **kwargs)
