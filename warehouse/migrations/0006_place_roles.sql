-- Place roles (issue 13): for each place an article names, whether it is where the attack
-- landed ('target'), where it was fired from ('launch'), or neither ('other'); NULL for
-- actors, weapons and cues, and for articles tagged before this migration (read as 'other').
-- Event identity (warehouse/cluster.py) never takes a launch place for the attack's place.
ALTER TABLE article_entities ADD COLUMN role TEXT;
