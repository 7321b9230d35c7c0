"""The shape the project promises: plain domain packages, thin DAGs."""
import ast
from pathlib import Path

from conftest import REPO

DOMAIN = ("sources", "warehouse", "alerts")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_domain_packages_never_import_airflow():
    offenders = [
        str(p.relative_to(REPO))
        for pkg in DOMAIN
        for p in (REPO / pkg).rglob("*.py")
        if any(m == "airflow" or m.startswith("airflow.") for m in _imports(p))
    ]
    assert offenders == []


def test_dag_files_import_only_airflow_at_module_level():
    for dag in (REPO / "dags").glob("*.py"):
        tree = ast.parse(dag.read_text(encoding="utf-8"))
        top = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
        assert top <= {"__future__", "os", "datetime", "airflow", "pendulum", "marsad_airflow"}, (dag.name, top)


def test_lock_file_pins_duckdb_to_its_extension_packages():
    lock = (REPO / "uv.lock").read_text()
    assert 'name = "duckdb"\nversion = "1.5.5"' in lock
    assert 'name = "duckdb-extension-fts"\nversion = "1.5.5"' in lock
    assert 'name = "apache-airflow"\nversion = "3.3.' in lock


def test_fts_extension_loads_offline_from_its_package(tmp_path):
    import duckdb
    import duckdb_extension_fts

    ext = next(Path(duckdb_extension_fts.__file__).parent.rglob("fts.duckdb_extension"))
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    con.execute("SET autoinstall_known_extensions = false; SET autoload_known_extensions = false")
    con.execute(f"INSTALL '{ext}'; LOAD fts")
    con.execute("CREATE TABLE d (id INT, t TEXT); INSERT INTO d VALUES (1, 'هجوم على عين الاسد'), (2, 'football')")
    con.execute("PRAGMA create_fts_index('d', 'id', 't', stemmer='none')")
    hits = con.execute("SELECT id FROM (SELECT id, fts_main_d.match_bm25(id, 'الاسد') AS s FROM d) WHERE s IS NOT NULL").fetchall()
    assert hits == [(1,)]
