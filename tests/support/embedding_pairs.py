"""Training pairs made by the tests: internal project codenames that the packaged model cannot
know, each the subject of one passage; training questions and held-out paraphrases name the
codename and never the passage's words, so only a fine-tuned model (or adapter) can connect them."""

from __future__ import annotations

from finetune.embedding.data import PairSet

PROJECTS = {
    "Zentrix": "The reservoir pumps lift drinking water into the hill district every night.",
    "Quorvel": "Payroll runs on the last working day of the month and includes overtime.",
    "Brimsa": "The wind farm's turbines are inspected for blade cracks each spring.",
    "Tavlek": "New employees receive their laptop and badge on the first morning.",
    "Ulmaro": "The bakery ovens are cleaned with steam and never with detergents.",
    "Okrenn": "Library books may be renewed online up to three times.",
    "Pexilo": "The ferry timetable changes when the river freezes in winter.",
    "Ravosh": "Hospital visitors must sign in at the front desk before going upstairs.",
    "Sulvane": "The orchard's apple trees are pruned in late February.",
    "Draxom": "Database backups are copied to a second data centre every six hours.",
    "Fennik": "The choir rehearses on Thursday evenings in the old church hall.",
    "Gorvath": "Street lights switch to LEDs district by district over three years.",
    "Hylox": "The museum's fossil collection is closed for cataloguing until June.",
    "Jastrel": "Bus drivers take a fifteen-minute break after every two hours of driving.",
    "Kemora": "The recycling centre accepts glass, paper and metal but not batteries.",
    "Lirvo": "Customer refunds are paid back to the original card within five days.",
    "Mavrek": "The swimming pool is heated by solar panels on the sports hall roof.",
    "Nostra": "Snow ploughs clear the main roads before the side streets.",
    "Ombrel": "The school canteen serves a vegetarian dish every day.",
    "Prenzo": "Fire extinguishers in the warehouse are checked every quarter.",
    "Quillet": "The vineyard harvests its grapes by hand in September.",
    "Rostak": "The call centre answers in English, French and German.",
    "Tesmir": "Parking permits for residents are renewed each January.",
    "Vendral": "The observatory telescope is open to the public on clear Fridays.",
}
TRAIN_TEMPLATES = (
    "What is project {name} about?",
    "Tell me what {name} covers.",
)
HELD_OUT_TEMPLATES = ("Which topic does the {name} initiative deal with?",)


def codename_pairs(templates: tuple[str, ...]) -> PairSet:
    """One query per codename and template, the codename's passage as its one relevant text."""
    data = PairSet()
    for name, passage in PROJECTS.items():
        for i, template in enumerate(templates):
            data.add(f"{name}:{i}", template.format(name=name), {name: passage}, "file")
    return data
