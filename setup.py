import re

from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

# The version is twisted_mesh.__version__, read without importing the
# package (whose dependencies may not be installed yet).
with open("twisted_mesh/__init__.py", encoding="utf-8") as init:
    version = re.search(r'^__version__ = "([^"]+)"$', init.read(), re.M).group(1)

setup(
    name="twisted_mesh",
    version=version,
    description="The p2p-today mesh socket on Twisted: meshes with py2p and js2p",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    author="the twisted_mesh authors",
    keywords=["p2p", "mesh", "twisted", "p2p-today", "py2p", "js2p", "websocket"],
    project_urls={
        "Protocol (p2p-today)": "https://github.com/p2p-today/p2p-project",
        "Twisted": "https://twisted.org",
    },
    python_requires=">=3.10",
    # Every package of twisted_mesh (a new one is not left out of the wheel),
    # and twisted/plugins, which has no __init__.py.
    packages=[*find_packages(include=["twisted_mesh", "twisted_mesh.*"]), "twisted.plugins"],
    package_data={
        "twisted_mesh": ["py.typed"],
        # The web page and the browser client (built from js/ by `npm run build`).
        "twisted_mesh.web": ["static/*"],
    },
    entry_points={"console_scripts": ["twisted-mesh = twisted_mesh._cli.main:main"]},
    install_requires=[
        "twisted>=23.10",
        "msgpack>=1.0",
        "pyOpenSSL>=23.0",
        "service-identity>=21.1",
        "autobahn>=23.1",
        # Node keys and signatures (signed networks): Ed25519.
        "cryptography>=41",
    ],
    extras_require={
        # Snappy compression (offered first when installed).
        "snappy": ["python-snappy>=0.7"],
        # The plot of the scale benchmark (python -m bench.scale --png ...).
        "bench": ["matplotlib"],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "hypothesis>=6",
            "python-snappy>=0.7",
            # The reference node the interop tests mesh with.
            "py2p==0.7.878",
            # Drives Debian's Chromium in the browser tests.
            "playwright>=1.40",
            # The package test builds the sdist and the wheel, and checks them.
            "build",
            "twine",
        ],
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Framework :: Twisted",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Operating System :: POSIX",
        "Programming Language :: JavaScript",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Internet",
        "Topic :: System :: Networking",
        "Typing :: Typed",
    ],
)
