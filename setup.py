from setuptools import find_packages, setup

with open("README.md", encoding="utf-8") as readme:
    long_description = readme.read()

setup(
    name="twisted_mesh",
    version="0.1.0",
    description="The p2p-today mesh socket on Twisted: meshes with py2p and js2p",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # Every package of twisted_mesh (a new one is not left out of the wheel),
    # and twisted/plugins, which has no __init__.py.
    packages=[*find_packages(include=["twisted_mesh", "twisted_mesh.*"]), "twisted.plugins"],
    package_data={
        "twisted_mesh": ["py.typed"],
        # The web page and the browser client (built from js/ by `npm run build`).
        "twisted_mesh.web": ["static/*"],
    },
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
        ],
    },
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: System :: Networking",
    ],
)
